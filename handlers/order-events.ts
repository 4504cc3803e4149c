/**
 * Sample: an order event fans out. The merchant gets the order; each affiliate that referred it
 * gets its commission; test orders produce nothing (the message is simply deleted).
 *
 *   { "orderId": "o-1", "merchant": "acme", "total": 120.5, "currency": "EUR",
 *     "affiliates": [{ "account": "blog-42", "rate": 0.05 }], "test": false }
 */
import { type HandlerMessage, type HandlerOutput, PermanentError } from "octorelay/handler";

interface OrderEvent {
  orderId: string;
  merchant: string;
  total: number;
  currency: string;
  affiliates?: { account: string; rate: number }[];
  test?: boolean;
}

export default async function handle(message: HandlerMessage<OrderEvent>): Promise<HandlerOutput[]> {
  const order = message.body;
  if (typeof order?.merchant !== "string" || typeof order.total !== "number") {
    throw new PermanentError("order event needs a merchant string and a numeric total");
  }
  if (order.test) return [];
  const outputs: HandlerOutput[] = [
    {
      account: order.merchant,
      payload: { type: "order", orderId: order.orderId, total: order.total, currency: order.currency },
    },
  ];
  for (const affiliate of order.affiliates ?? []) {
    outputs.push({
      account: affiliate.account,
      payload: {
        type: "commission",
        orderId: order.orderId,
        merchant: order.merchant,
        amount: Math.round(order.total * affiliate.rate * 100) / 100,
        currency: order.currency,
      },
    });
  }
  return outputs;
}
