// The page: loads the bundle's model with onnxruntime-web and generates in the visitor's browser.
// Every file comes from the folder the page is served from (web.json, tokenizer.json, the model,
// ort/): nothing is fetched from anywhere else.

import { generate } from "./generate.js";
import { mulberry32 } from "./sampling.js";
import { Tokenizer } from "./tokenizer.js";

const $ = (id) => document.getElementById(id);
const here = (path) => new URL(path, document.baseURI).href; // relative to the page, not to this script
let model = null; // {ort, session, tokenizer, web, provider} once loaded
let controller = null; // aborts the running generation

function status(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function fetchOk(path) {
  const response = await fetch(here(path));
  if (!response.ok) throw new Error(`could not load ${path} (HTTP ${response.status})`);
  return response;
}

// The model file's bytes, with progress in #status (a model is tens or hundreds of MB).
async function fetchModel(path) {
  const response = await fetchOk(path);
  const total = Number(response.headers.get("content-length")) || 0;
  const chunks = [];
  let loaded = 0;
  for (const reader = response.body.getReader(); ; ) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    const mb = (n) => (n / 1e6).toFixed(1);
    status(`Loading ${path}: ${mb(loaded)}${total ? ` of ${mb(total)}` : ""} MB…`);
  }
  const bytes = new Uint8Array(loaded);
  chunks.reduce((at, c) => (bytes.set(c, at), at + c.length), 0);
  return bytes;
}

// onnxruntime-web and a session on the model. ort.webgpu.min.mjs loads
// ort-wasm-simd-threaded.asyncify.{mjs,wasm}; ort.wasm.min.mjs loads ort-wasm-simd-threaded.{mjs,wasm}.
async function startSession(bytes, gpu) {
  const ort = await import(here(gpu ? "ort/ort.webgpu.min.mjs" : "ort/ort.wasm.min.mjs"));
  ort.env.wasm.wasmPaths = here("ort/"); // an absolute URL: a bare "ort/" would resolve against ort/ itself
  ort.env.wasm.numThreads = self.crossOriginIsolated ? 2 : 1; // threads need SharedArrayBuffer
  const executionProviders = gpu ? ["webgpu", "wasm"] : ["wasm"];
  return { ort, session: await ort.InferenceSession.create(bytes, { executionProviders, graphOptimizationLevel: "all" }) };
}

async function load() {
  status("Loading web.json and tokenizer.json…");
  const [web, spec] = await Promise.all([(await fetchOk("web.json")).json(), (await fetchOk("tokenizer.json")).json()]);
  const tokenizer = new Tokenizer(spec);
  const bytes = await fetchModel(web.model.file);
  // WebGPU only where the variant suits it and the browser has a GPU adapter (headless browsers
  // often have navigator.gpu but no adapter); otherwise WebAssembly on the CPU.
  const gpu = Boolean(web.webgpu && navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null)));
  let provider = gpu ? "webgpu" : "wasm";
  let note = "";
  status(`Starting onnxruntime-web (${provider})…`);
  let ort, session;
  try {
    ({ ort, session } = await startSession(bytes, gpu));
  } catch (error) {
    if (!gpu) throw error;
    // The WebGPU build's CPU fallback lacks some operators (the int4 graph's GatherBlockQuantized):
    // if WebGPU cannot take the model, the plain WebAssembly build can.
    [provider, note] = ["wasm", ` (WebGPU failed: ${error.message})`];
    ({ ort, session } = await startSession(bytes, false));
  }
  model = { ort, session, tokenizer, web, provider };

  const s = web.sampling;
  $("max-new-tokens").value = s.max_new_tokens;
  $("temperature").value = s.temperature;
  $("top-k").value = s.top_k;
  $("top-p").value = s.top_p;
  $("provider").textContent = provider;
  status(`Ready: ${web.variant} model, ${web.model.n_layer} layers, context ${web.model.context_length}, running on ${provider}${note}.`);
  $("generate").disabled = false;
  document.body.dataset.ready = "1";
}

// The settings from the form, checked as runtime/settings.py checks them; a bad one throws a
// one-line message for #status.
function readSettings() {
  const field = (id, parse, ok, rule) => {
    const text = $(id).value.trim();
    const value = parse(text);
    if (text === "" || !ok(value)) throw new Error(`${$(id).dataset.name} "${text}" is invalid: use ${rule}`);
    return value;
  };
  const whole = (min, max = Number.MAX_SAFE_INTEGER) => (v) => Number.isInteger(v) && v >= min && v <= max;
  const seedText = $("seed").value.trim();
  return {
    max_new_tokens: field("max-new-tokens", Number, whole(0), "a whole number >= 0"),
    temperature: field("temperature", Number, (v) => Number.isFinite(v) && v >= 0, "a number >= 0 (0 is greedy)"),
    top_k: field("top-k", Number, whole(0), "a whole number >= 0 (0 switches it off)"),
    top_p: field("top-p", Number, (v) => v > 0 && v <= 1, "a number in (0, 1] (1 switches it off)"),
    repetition_penalty: model.web.sampling.repetition_penalty,
    // empty: a fresh random seed each time
    seed: seedText === "" ? crypto.getRandomValues(new Uint32Array(1))[0]
      : field("seed", Number, whole(0, 2 ** 32 - 1), "a whole number from 0 to 4294967295, or nothing"),
    // one per line; the two characters \n stand for a newline
    stop: $("stop-strings").value.split("\n").filter((line) => line).map((line) => line.replaceAll("\\n", "\n")),
  };
}

async function run() {
  let settings;
  try {
    settings = readSettings();
  } catch (error) {
    status(error.message, true);
    return;
  }
  const prompt = $("prompt").value;
  const answer = document.createElement("span");
  answer.className = "answer";
  $("output").replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }), answer);
  $("stats").textContent = "";
  delete document.body.dataset.done;
  $("generate").disabled = true;
  $("stop").disabled = false;
  status("Generating…");
  controller = new AbortController();
  let breath = performance.now();
  try {
    const { ort, session, tokenizer, web } = model;
    const pieces = generate({
      session, Tensor: ort.Tensor, tokenizer, config: web.model, prompt, settings,
      rng: mulberry32(settings.seed), signal: controller.signal,
    });
    for await (const piece of pieces) {
      if (piece.done) {
        window.lastTokens = piece.tokens;
        $("stats").textContent = [
          `provider ${model.provider}`, `first token ${piece.ttftMs.toFixed(1)} ms`,
          `${piece.tokensPerS.toFixed(1)} tokens/s`, `${piece.tokens.length} tokens`, `stopped by ${piece.stopReason}`,
        ].join(" · ");
        status(`Done (seed ${settings.seed}).`);
      } else if (piece.text) {
        answer.append(piece.text);
      }
      // Let the browser paint and handle clicks (Stop) now and then: session.run may not.
      if (performance.now() - breath > 50) {
        await new Promise((resolve) => setTimeout(resolve));
        breath = performance.now();
      }
    }
  } catch (error) {
    status(`Generation failed: ${error.message}`, true);
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    document.body.dataset.done = "1";
  }
}

$("generate").addEventListener("click", run);
$("stop").addEventListener("click", () => controller?.abort());
load().catch((error) => status(`Could not load the model: ${error.message}`, true));
