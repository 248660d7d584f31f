// Builds the console into the package directory the server serves at `/` (docs/console.md).
// Asset names carry a content hash (the server lets browsers cache assets/ for a year) and
// the build embeds no dates or paths, so a rebuild of the same sources gives the same files:
// tests/console/test_assets_fresh.py compares them. public/ (the directory's README) is copied.
import { resolve } from "node:path";
import { defineConfig } from "vite";

const outDir = process.env.CONSOLE_OUT_DIR ?? resolve(import.meta.dirname, "../agentrun/server/console/static");

const names = {
  entryFileNames: "assets/[name]-[hash].js",
  chunkFileNames: "assets/[name]-[hash].js",
  assetFileNames: "assets/[name]-[hash][extname]",
};

export default defineConfig({
  base: "/",
  build: {
    outDir,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 4096,
    rolldownOptions: { output: names },
  },
  worker: {
    format: "es",
    rolldownOptions: { output: names },
  },
});
