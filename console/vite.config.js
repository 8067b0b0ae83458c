import { defineConfig } from "vite";

// Served by the learner under /console/ (rft_learner/http_api/console.py).
export default defineConfig({
  base: "/console/",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 400 },
  server: { proxy: { "/v1": "http://127.0.0.1:8080" } },
});
