// lipdub client for Node >= 18: ESM, no dependencies (global fetch, FormData, Blob,
// node:crypto, node:fs). The same calls as the Python client (lipdub.Client):
//
//   import { Client } from './lipdub.mjs'
//   const c = new Client('http://127.0.0.1:8000', process.env.LIPDUB_KEY)
//   const { taskId } = await c.identify('clip.mp4')          // local files are uploaded
//   const { faceData } = await c.wait(taskId)
//   const t = await c.lipSync(faceData.session_id, [{ face_id: 'face_001', sound_file: 'speech.wav' }])
//   console.log((await c.wait(t.taskId)).resultUrls[0])
//
// verifyWebhook / webhookMiddleware check Standard Webhooks signatures of callbacks.

import { createHmac, timingSafeEqual } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { basename } from 'node:path'

const GEN = '/api/v1/audio/generations'
const FINAL = new Set(['completed', 'failed'])
const RETRY = new Set([429, 502, 503, 504])
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export class ApiError extends Error {
  constructor (status, message, data) {
    super(`HTTP ${status}: ${message}`)
    this.status = status
    this.msg = message
    this.data = data
  }
}

export class WebhookVerificationError extends Error {}

async function isLocalFile (source) {
  if (/^(https?:|data:)/i.test(source) || source.length > 4096) return false
  try { return (await stat(source)).isFile() } catch { return false }
}

export class Client {
  constructor (baseUrl, key, { retries = 5, timeoutMs = 60000 } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '')
    this.key = key
    this.retries = retries
    this.timeoutMs = timeoutMs
  }

  async _call (method, path, { query, json, form, timeoutMs } = {}) {
    const url = new URL(this.baseUrl + path)
    for (const [k, v] of Object.entries(query || {})) if (v != null) url.searchParams.set(k, String(v))
    const headers = { Authorization: `Bearer ${this.key}` }
    let body
    if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json) }
    if (form !== undefined) body = form
    for (let attempt = 0; ; attempt++) {
      let res
      try {
        res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs || this.timeoutMs) })
      } catch (e) {
        // Only reads are repeated: a create may have been accepted although its answer
        // was lost (send external_task_id and retry it yourself).
        if (method !== 'GET' || attempt >= this.retries) throw e
        await sleep(Math.min(30000, 500 * 2 ** attempt))
        continue
      }
      if (RETRY.has(res.status) && attempt < this.retries) {
        const after = Number(res.headers.get('retry-after'))
        await sleep(after > 0 ? after * 1000 : Math.min(30000, 500 * 2 ** attempt))
        continue
      }
      const text = await res.text()
      let env
      try { env = JSON.parse(text) } catch { throw new ApiError(res.status, text.slice(0, 200)) }
      if (res.status >= 400 || env.code >= 400) throw new ApiError(res.status, env.msg, env.data)
      return env.data
    }
  }

  /** Upload a local file; `.url` is usable as video_url or sound_file. */
  async upload (path) {
    const form = new FormData()
    form.append('file', new Blob([await readFile(path)]), basename(path))
    return this._call('POST', '/api/v1/files', { form, timeoutMs: 600000 })
  }

  async _source (source) {
    return (await isLocalFile(source)) ? (await this.upload(source)).url : source
  }

  async identify (video, { callbackUrl, externalTaskId } = {}) {
    const json = { model: 'kling-identify-face', video_url: await this._source(video) }
    if (callbackUrl) json.callback_url = callbackUrl
    if (externalTaskId) json.external_task_id = externalTaskId
    return this._call('POST', GEN, { json })
  }

  async lipSync (sessionId, faces, { callbackUrl, externalTaskId } = {}) {
    const entries = []
    for (const f of faces) entries.push({ ...f, sound_file: await this._source(f.sound_file) })
    const json = { model: 'kling-advanced-lip-sync', session_id: sessionId, face_choose: entries }
    if (callbackUrl) json.callback_url = callbackUrl
    if (externalTaskId) json.external_task_id = externalTaskId
    return this._call('POST', GEN, { json })
  }

  /** The task; `wait` (seconds, at most 30) holds the answer for a final state. */
  async get (taskId, { wait = 0 } = {}) {
    const w = Math.min(wait, 30)
    return this._call('GET', GEN, { query: { task_id: taskId, wait: w || undefined }, timeoutMs: (w + 30) * 1000 })
  }

  /** Until completed or failed: server-side waits of up to 30 s, no busy polling. */
  async wait (taskId, { timeoutS = 900 } = {}) {
    const deadline = Date.now() + timeoutS * 1000
    for (;;) {
      const left = (deadline - Date.now()) / 1000
      const task = await this.get(taskId, { wait: Math.max(0, Math.min(30, left)) })
      if (FINAL.has(task.state)) return task
      if (left <= 0) throw new Error(`task ${taskId} is still ${task.state} after ${timeoutS} s`)
    }
  }

  /** One page: { items (newest first), next_cursor (null on the last page) }. */
  async list ({ limit = 20, cursor, model, state } = {}) {
    return this._call('GET', GEN, { query: { limit, cursor, model, state } })
  }

  async cancel (taskId) {
    return this._call('POST', GEN + '/cancel', { json: { task_id: taskId } })
  }

  async usage ({ days = 30 } = {}) {
    return this._call('GET', '/api/v1/usage', { query: { days } })
  }
}

/** The callback payload if its Standard Webhooks signature is valid; throws otherwise.
 *  `headers`: a plain object (Express req.headers) or a Headers; `body`: the raw body. */
export function verifyWebhook (secret, headers, body, { toleranceS = 300, now = Date.now() / 1000 } = {}) {
  const get = (k) => (typeof headers.get === 'function' ? headers.get(k) : headers[k])
  const id = get('webhook-id'); const ts = get('webhook-timestamp'); const sigs = get('webhook-signature')
  if (!id || !ts || !sigs) throw new WebhookVerificationError('missing webhook-id, webhook-timestamp or signature')
  if (!/^\d+$/.test(ts) || Math.abs(now - Number(ts)) > toleranceS) {
    throw new WebhookVerificationError('webhook-timestamp is too old, in the future or not a number')
  }
  const raw = Buffer.isBuffer(body) ? body : Buffer.from(body)
  const b64 = secret.replace(/^whsec_/, '')
  const key = /^[A-Za-z0-9+/]+={0,2}$/.test(b64) && b64.length % 4 === 0 ? Buffer.from(b64, 'base64') : Buffer.from(b64)
  const expected = createHmac('sha256', key).update(`${id}.${ts}.`).update(raw).digest()
  for (const sig of sigs.split(' ')) {
    const [version, value] = sig.split(',')
    const got = Buffer.from(value || '', 'base64')
    if (version === 'v1' && got.length === expected.length && timingSafeEqual(got, expected)) {
      return JSON.parse(raw.toString('utf8'))
    }
  }
  throw new WebhookVerificationError('no signature matches')
}

/** Express-style middleware: reads the raw body, verifies it, sets req.body to the payload
 *  and calls next(); answers 400 on a bad signature (the service then retries). Mount it
 *  instead of express.json() on the callback route. */
export function webhookMiddleware (secret, opts = {}) {
  return (req, res, next) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      try {
        req.body = verifyWebhook(secret, req.headers, Buffer.concat(chunks), opts)
      } catch (e) {
        res.statusCode = 400
        res.end(String(e.message))
        return
      }
      next()
    })
  }
}
