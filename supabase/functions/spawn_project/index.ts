// spawn_project (seed 000): the browser's way in. It checks the signed-in user's Supabase JWT,
// then forwards the idea to myyc's API signed with the shared HMAC secret, on the user's
// behalf, with an Idempotency-Key (the client's, or a new one) so a retry spawns nothing twice.
//
// Env: MYYC_API_URL, MYYC_HMAC_SECRET, SUPABASE_JWT_SECRET (the project's JWT secret).
// The JWT is verified here as well as at the gateway, so the function is safe with
// verify_jwt off (Supabase's advice for the new API keys).

const encoder = new TextEncoder();

type ErrorCode = "validation_error" | "unauthorized" | "upstream_error";

function error(status: number, code: ErrorCode, message: string, field?: string): Response {
  const body = { error: field ? { code, message, field } : { code, message } };
  return Response.json(body, { status, headers: CORS });
}

const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-headers": "authorization, apikey, content-type, idempotency-key",
  "access-control-allow-methods": "POST, OPTIONS",
};

function base64UrlDecode(part: string): Uint8Array<ArrayBuffer> {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function hmacKey(secret: string, usage: KeyUsage): Promise<CryptoKey> {
  return await crypto.subtle.importKey(
    "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage],
  );
}

/** The user id of a valid HS256 Supabase user token, or null. */
async function verifiedUser(token: string, secret: string): Promise<string | null> {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[0])));
    if (header.alg !== "HS256") return null;
    const ok = await crypto.subtle.verify(
      "HMAC", await hmacKey(secret, "verify"), base64UrlDecode(parts[2]),
      encoder.encode(`${parts[0]}.${parts[1]}`),
    );
    if (!ok) return null;
    const claims = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[1])));
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== "number" || claims.exp < now) return null;
    if (claims.role !== "authenticated" || typeof claims.sub !== "string") return null;
    return claims.sub;
  } catch {
    return null;
  }
}

async function sign(
  secret: string, ts: number, nonce: string, path: string, body: string,
): Promise<string> {
  const mac = await crypto.subtle.sign(
    "HMAC", await hmacKey(secret, "sign"), encoder.encode(`${ts}.${nonce}.POST.${path}.${body}`),
  );
  return "v1=" + Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function handle(req: Request, env: (name: string) => string | undefined): Promise<Response> {
  if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: CORS });
  if (req.method !== "POST") return error(405, "validation_error", "use POST", "method");
  const api = env("MYYC_API_URL"), hmac = env("MYYC_HMAC_SECRET"), jwt = env("SUPABASE_JWT_SECRET");
  if (!api || !hmac || !jwt) return error(500, "upstream_error", "spawn_project is not configured");

  const token = (req.headers.get("authorization") ?? "").replace(/^Bearer\s+/i, "");
  const userId = token ? await verifiedUser(token, jwt) : null;
  if (!userId) return error(401, "unauthorized", "sign in first", "authorization");

  let idea: Record<string, unknown>;
  try {
    idea = await req.json();
  } catch {
    return error(422, "validation_error", "body must be JSON", "body");
  }
  if (typeof idea !== "object" || idea === null || Array.isArray(idea)) {
    return error(422, "validation_error", "body must be a JSON object", "body");
  }
  const { title, description, category } = idea as Record<string, unknown>;
  if (typeof title !== "string" || title.trim() === "") {
    return error(422, "validation_error", "title is required", "body.title");
  }
  const body = JSON.stringify({
    title,
    description: typeof description === "string" ? description : null,
    category: typeof category === "string" ? category : null,
    user_id: userId,
  });
  const ts = Math.floor(Date.now() / 1000);
  // A nonce per request: a double click sends identical bodies within one second, which
  // must reach the API as two requests (the Idempotency-Key then answers the second).
  const nonce = crypto.randomUUID();
  const path = "/spawn";
  let upstream: Response;
  try {
    upstream = await fetch(api.replace(/\/$/, "") + path, {
      method: "POST",
      body,
      headers: {
        "content-type": "application/json",
        "idempotency-key": req.headers.get("idempotency-key") ?? crypto.randomUUID(),
        "x-myyc-timestamp": String(ts),
        "x-myyc-nonce": nonce,
        "x-myyc-signature": await sign(hmac, ts, nonce, path, body),
      },
    });
  } catch (err) {
    return error(502, "upstream_error", `myyc is unreachable: ${err}`);
  }
  return new Response(await upstream.text(), {
    status: upstream.status,
    headers: { ...CORS, "content-type": "application/json" },
  });
}

if (import.meta.main) {
  const port = Number(Deno.env.get("PORT") ?? "8000");
  Deno.serve({ port, hostname: "127.0.0.1" }, (req) => handle(req, (n) => Deno.env.get(n)));
}
