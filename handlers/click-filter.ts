/**
 * Sample: keeps only the click events a partner pays for and trims them to what it needs.
 * Bot traffic and page views produce no output; everything else goes to the campaign's owner.
 *
 *   { "type": "click", "partner": "adnet-7", "campaign": "c-19", "userAgent": "...", "ts": 1732350000000 }
 */
import type { HandlerMessage, HandlerOutput } from "octorelay/handler";

interface ClickEvent {
  type: string;
  partner: string;
  campaign: string;
  userAgent?: string;
  ts: number;
}

const BOT = /bot|crawler|spider|headless/i;

export default async function handle(
  message: HandlerMessage<ClickEvent>,
): Promise<HandlerOutput | undefined> {
  const event = message.body;
  if (event?.type !== "click" || BOT.test(event.userAgent ?? "")) return undefined;
  return {
    account: event.partner,
    payload: { campaign: event.campaign, at: new Date(event.ts).toISOString(), messageId: message.id },
  };
}
