// connmix.mjs: ES-module entry of connmix.js (named exports), for browsers
// (<script type="module">, import maps) and Node:
//   import { ConnmixClient, ConnmixError } from "./connmix.mjs";
// connmix.js stays a single UMD-style file that also runs as a classic
// <script>; importing it for its side effect sets globalThis.Connmix.
import "./connmix.js";

const api = globalThis.Connmix;
export const ConnmixClient = api.ConnmixClient;
export const ConnmixError = api.ConnmixError;
export const VERSION = api.VERSION;
export default ConnmixClient;
