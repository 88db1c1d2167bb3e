// lipdub client for Node >= 18: ESM, no dependencies (global fetch, FormData, Blob,
// node:crypto, node:fs). The same calls as the Python client (lipdub.Client):
//
//   import { Client } from './lipdub.mjs'
//   const c = new Client('http://127.0.0.1:8000', process.env.LIPDUB_KEY)
//   const { taskId } = await c.identify('clip.mp4')          // local files are uploaded
//   const { faceData } = await c.wait(taskId)
//   const t = await c.lipSync(faceData.session_id, [{ face_id: 'face_001', sound_file: 'speech.wav' }])
//   await c.download(await c.wait(t.taskId), 'dubbed.mp4')   // saved; returns the path
//
// wait() throws TaskFailed (failCode, failMsg) for a failed task; a local path that does
// not exist throws FileNotFoundError (code 'ENOENT') before any request.
//
// verifyWebhook / webhookMiddleware check Standard Webhooks signatures of callbacks.

import { createHmac, timingSafeEqual } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { readFile, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

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

/** A task that ended failed: failCode, failMsg, taskId and the whole task. */
export class TaskFailed extends Error {
  constructor (task) {
    super(`task ${task.taskId} failed (${task.failCode || 'no failCode'}): ${task.failMsg || 'no failMsg'}`)
    this.name = 'TaskFailed'
    this.task = task
    this.taskId = task.taskId
    this.failCode = task.failCode ?? null
    this.failMsg = task.failMsg ?? null
  }
}

/** A local path that names no file (thrown before any request). */
export class FileNotFoundError extends Error {
  constructor (path, what = 'does not exist') {
    super(`${path} ${what}: give the path of a video or audio file`)
    this.name = 'FileNotFoundError'
    this.code = 'ENOENT'
    this.path = path
  }
}

const isBase64 = (s) => /^[A-Za-z0-9+/]+={0,2}$/.test(s) && s.length % 4 === 0
const expandHome = (p) => (p.startsWith('~/') && process.env.HOME ? join(process.env.HOME, p.slice(2)) : p)

/** The local file `source` names, or null for a URL, data: URI or Base64; throws
 *  FileNotFoundError for a path to nothing (Base64 has no '.', '\\' or '~', and starts
 *  with '/' only by chance). */
async function localPath (source) {
  let s = String(source).trim()
  if (/^(https?:|data:)/i.test(s) || s.length > 4096) return null
  const fileUrl = /^file:\/\//i.test(s)
  if (fileUrl) s = fileURLToPath(s)
  s = expandHome(s)
  let st = null
  try { st = await stat(s) } catch {}
  if (st && st.isFile()) return s
  const pathlike = fileUrl || /^(\.\.?\/|~)/.test(s) || s.includes('.') || s.includes('\\') ||
    (s.startsWith('/') && !isBase64(s))
  if (!pathlike && !st) return null
  throw new FileNotFoundError(s, st ? 'is a directory, not a file' : 'does not exist')
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
    path = (await localPath(path)) ?? path
    const form = new FormData()
    form.append('file', new Blob([await readFile(path)]), basename(path))
    return this._call('POST', '/api/v1/files', { form, timeoutMs: 600000 })
  }

  async _source (source) {
    const path = await localPath(source)
    return path !== null ? (await this.upload(path)).url : source
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

  /** The completed task (server-side waits of up to 30 s, no busy polling); throws
   *  TaskFailed for a failed one (or returns it with { check: false }). */
  async wait (taskId, { timeoutS = 900, check = true } = {}) {
    const deadline = Date.now() + timeoutS * 1000
    for (;;) {
      const left = (deadline - Date.now()) / 1000
      const task = await this.get(taskId, { wait: Math.max(0, Math.min(30, left)) })
      if (FINAL.has(task.state)) {
        if (check && task.state === 'failed') throw new TaskFailed(task)
        return task
      }
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

  /** Save a completed lip-sync task's result (or any media URL, such as a
   *  face_reference) to `path`, a file or a directory (the URL's name kept); returns the
   *  path written. Signed links: no API key is sent. Written beside `path` first, so a
   *  broken download leaves no partial file. Throws TaskFailed for a failed task. */
  async download (urlOrTask, path) {
    let url = urlOrTask
    if (typeof urlOrTask !== 'string') {
      if (urlOrTask.state === 'failed') throw new TaskFailed(urlOrTask)
      url = (urlOrTask.resultUrls || [])[0]
      if (!url) throw new Error(`task ${urlOrTask.taskId} has no result to download (state ${urlOrTask.state}): wait for a completed lip-sync task`)
    }
    url = new URL(url, this.baseUrl + '/').toString()
    let target = expandHome(String(path))
    try {
      if ((await stat(target)).isDirectory()) target = join(target, basename(new URL(url).pathname) || 'result.mp4')
    } catch {}
    const res = await fetch(url, { redirect: 'follow' })
    if (!res.ok) {
      const text = await res.text()
      let env = null
      try { env = JSON.parse(text) } catch {}
      throw new ApiError(res.status, env?.msg || text.slice(0, 200) || res.statusText, env?.data)
    }
    const tmp = join(dirname(target), `.lipdub-${process.pid}-${Date.now()}-${basename(target)}`)
    try {
      await pipeline(Readable.fromWeb(res.body), createWriteStream(tmp))
      await rename(tmp, target)
    } catch (e) {
      await rm(tmp, { force: true })
      throw e
    }
    return target
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
