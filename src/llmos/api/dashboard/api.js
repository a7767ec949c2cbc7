// The kernel's JSON API, called with the user's bearer token (same origin only).

export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status; // 0: the kernel did not answer
    this.param = param;
    this.code = code;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status line
  }
  const e = (body && body.error) || {};
  const message = e.message || `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, message, e.param ?? null, e.code ?? null);
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, { body, query, raw = false } = {}) {
    let url = path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== null && v !== undefined && v !== "") params.set(k, String(v));
      }
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    const headers = { Authorization: `Bearer ${this.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, `cannot reach the kernel: ${err.message}`);
    }
    if (!response.ok) throw await errorOf(response);
    return raw ? response : response.json();
  }

  get(path, query) {
    return this.request("GET", path, { query });
  }

  post(path, body) {
    return this.request("POST", path, { body });
  }

  del(path) {
    return this.request("DELETE", path);
  }

  /** A file's bytes (GET /v1/files/<path>); each segment URL-encoded. */
  async fileBytes(path) {
    const encoded = path.split("/").map(encodeURIComponent).join("/");
    const response = await this.request("GET", `/v1/files/${encoded}`, { raw: true });
    return new Uint8Array(await response.arrayBuffer());
  }
}
