import { render } from "preact";
import { App } from "./App";
import "./style.css";

// The server answers any extensionless path with this page: `/executions/ID` becomes the hash
// route `#/executions/ID`, so links written either way open the same page.
if (location.pathname !== "/" && !location.hash) {
  history.replaceState(null, "", `/#${location.pathname}${location.search}`);
}

render(<App />, document.getElementById("app")!);
