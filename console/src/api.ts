// Clients of the four services over the Connect protocol, on the origin that served the page,
// with the API key sent as the gRPC API expects it: `authorization: Bearer KEY`.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ExecutionService } from "./gen/agentrun/v1/execution_service_pb";
import { StateMachineService } from "./gen/agentrun/v1/state_machine_service_pb";
import { WorkerService } from "./gen/agentrun/v1/worker_service_pb";
import { WorkflowService } from "./gen/agentrun/v1/workflow_service_pb";
import { activeKey } from "./keys";

const auth: Interceptor = (next) => async (req) => {
  const key = activeKey();
  if (key) req.header.set("authorization", `Bearer ${key.key}`);
  return next(req);
};

const transport = createConnectTransport({
  // The API is on the origin that served the console (docs/console.md).
  baseUrl: typeof location === "undefined" ? "http://localhost" : location.origin,
  useBinaryFormat: true,
  interceptors: [auth],
});

export const workflows: Client<typeof WorkflowService> = createClient(WorkflowService, transport);
export const executions: Client<typeof ExecutionService> = createClient(ExecutionService, transport);
export const machines: Client<typeof StateMachineService> = createClient(StateMachineService, transport);
export const workers: Client<typeof WorkerService> = createClient(WorkerService, transport);
