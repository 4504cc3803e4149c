/**
 * A URL as messages may show it: any password (everything between "//" and the last "@", but a
 * user name before ":") and every query value replaced by ***. String work only: never throws, and
 * over-redacts rather than under-redacts a malformed URL.
 */
export function withoutSecrets(url: string): string {
  let shown = url;
  const at = shown.lastIndexOf("@");
  if (at >= 0) {
    const slashes = shown.indexOf("//");
    const start = slashes >= 0 && slashes < at ? slashes + 2 : 0;
    const userinfo = shown.slice(start, at);
    const colon = userinfo.indexOf(":");
    shown = `${shown.slice(0, start)}${colon >= 0 ? `${userinfo.slice(0, colon)}:***` : "***"}${shown.slice(at)}`;
  }
  const query = shown.search(/[?#]/);
  if (query < 0) return shown;
  return shown.slice(0, query) + shown.slice(query).replace(/=[^&#]+/g, "=***");
}
