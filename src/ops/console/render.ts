/**
 * Eta, loaded with the console's templates once at start. autoEscape is on (Eta's default, set
 * explicitly): every `<%= %>` is HTML-escaped, so an account name, an error message or a message
 * body can never become markup.
 */
import { Eta } from "eta";
import { count, duration, rate } from "./overview.ts";
import { deadLettersPage } from "./views/dead-letters.ts";
import { errorPage, layout, loginPage } from "./views/layout.ts";
import { chartPartial, overviewPage } from "./views/overview.ts";
import { partnerPage, settingsPartial } from "./views/partner.ts";
import { partnersPage } from "./views/partners.ts";

const TEMPLATES = {
  "@layout": layout,
  "@error": errorPage,
  "@login": loginPage,
  "@overview": overviewPage,
  "@chart": chartPartial,
  "@partners": partnersPage,
  "@partner": partnerPage,
  "@settings": settingsPartial,
  "@dead-letters": deadLettersPage,
} as const;

export type PageName = "@error" | "@login" | "@overview" | "@partners" | "@partner" | "@dead-letters";

/** Formatting the templates use; kept here so every page writes numbers the same way. */
export const FORMAT = {
  count,
  rate,
  duration,
  clip: (text: string, chars: number) => (text.length > chars ? `${text.slice(0, chars)}…` : text),
  time: (ms: number) =>
    new Date(ms)
      .toISOString()
      .replace("T", " ")
      .replace(/\.\d+Z$/, "Z"),
  ago: (ms: number) => `${duration(Math.max(0, Date.now() - ms))} ago`,
};

export interface Chrome {
  title: string;
  here: string;
  nav: { href: string; label: string; current: boolean }[];
  auth: { actionsEnabled: boolean; kind: "none" | "bearer" | "session" };
  csrf: string;
  ready: { ready: boolean; reasons: string[] } | undefined;
  notice: { kind: "ok" | "info" | "warn" | "bad"; text: string } | undefined;
}

export class Views {
  readonly #eta: Eta;

  constructor() {
    this.#eta = new Eta({ autoEscape: true, autoTrim: [false, "nl"], cache: true });
    for (const [name, text] of Object.entries(TEMPLATES)) this.#eta.loadTemplate(name, text);
  }

  page(name: PageName, chrome: Chrome, data: object): string {
    const body = this.#eta.render(name, { ...FORMAT, ...data });
    return this.#eta.render("@layout", {
      ...chrome,
      body,
      hxHeaders: JSON.stringify(chrome.csrf ? { "x-csrf-token": chrome.csrf } : {}),
      // No eval (hx-on, js: values), no script tags from responses, no requests to other hosts.
      htmxConfig: JSON.stringify({
        includeIndicatorStyles: false,
        allowEval: false,
        allowScriptTags: false,
        selfRequestsOnly: true,
        historyCacheSize: 0,
      }),
      renderedAt: FORMAT.time(Date.now()),
    });
  }
}
