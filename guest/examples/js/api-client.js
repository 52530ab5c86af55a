// The api-client in JavaScript: same behaviour as guest/examples/api-client. It charges a card through a payment
// API with `fetch`; the host injects the API key (KEYWARD_INJECT_API_KEY=https://api.example.com Authorization:
// Bearer {secret}) on the way out, so the key never enters the guest. Its world imports neither kms nor keys: it
// runs on a host that denies guests plaintext.
const API = 'https://api.example.com';

export const handler = {
  async handle(event, ctx) {
    const { amount, currency } = JSON.parse(event);
    let response;
    try {
      response = await fetch(`${API}/v1/charges`, {
        method: 'POST',
        // Retried charges are charged once: the API keys them by the invocation.
        headers: { 'content-type': 'application/json', 'idempotency-key': ctx.requestId },
        body: JSON.stringify({ amount, currency }),
      });
    } catch (e) {
      throw `payment API unreachable: ${e}`;
    }
    const text = await response.text();
    if (response.status !== 200) throw `payment API answered ${response.status}: ${text}`;
    let answer;
    try {
      answer = JSON.parse(text);
    } catch (e) {
      throw `payment API answered non-JSON: ${e}`;
    }
    return JSON.stringify({ charge: answer.id, status: answer.status });
  },
};
