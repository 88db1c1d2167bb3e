// The public API, as any client calls it: Bearer key, {code, msg, data} envelopes.
const KEY = 'lipdub.key'

export const getKey = () => sessionStorage.getItem(KEY)
export const setKey = (k) => sessionStorage.setItem(KEY, k)
export const clearKey = () => sessionStorage.removeItem(KEY)

export class ApiError extends Error {
  constructor (status, msg, data) { super(msg); this.status = status; this.data = data }
}

export async function api (path, { method = 'GET', body, key = getKey() } = {}) {
  const headers = { Authorization: `Bearer ${key}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let res
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch (e) {
    throw new ApiError(0, `The service did not answer (${e.message}); check that it runs.`)
  }
  const env = await res.json().catch(() => ({ msg: `HTTP ${res.status}` }))
  if (!res.ok) throw new ApiError(res.status, env.msg, env.data)
  return env.data
}

// XHR rather than fetch: only XHR reports upload progress.
export function upload (file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('POST', '/api/v1/files')
    xhr.setRequestHeader('Authorization', `Bearer ${getKey()}`)
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total)
    xhr.onload = () => {
      let env = {}
      try { env = JSON.parse(xhr.responseText) } catch { env = { msg: `HTTP ${xhr.status}` } }
      if (xhr.status === 200) resolve(env.data)
      else reject(new ApiError(xhr.status, env.msg, env.data))
    }
    xhr.onerror = () => reject(new ApiError(0, 'The upload was interrupted; retry.'))
    const form = new FormData()
    form.append('file', file)
    xhr.send(form)
  })
}

// Long-polls with the server's wait=S until the task is final; onUpdate sees each state.
export async function follow (taskId, onUpdate, isLive = () => true) {
  for (;;) {
    const t = await api(`/api/v1/audio/generations?task_id=${encodeURIComponent(taskId)}&wait=2`)
    if (!isLive()) return t
    onUpdate(t)
    if (t.state === 'completed' || t.state === 'failed') return t
  }
}

export const usd = (micros) => `$${(micros / 1e6).toFixed(4)}`
export const when = (ms) => (ms ? new Date(ms).toLocaleString() : '')
export const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

// Which video a task was made from: the API does not return inputs, so the console keeps
// them in this browser to show the original beside the result.
const SOURCES = 'lipdub.sources'
export function remember (taskId, info) {
  const all = JSON.parse(localStorage.getItem(SOURCES) || '{}')
  all[taskId] = info
  localStorage.setItem(SOURCES, JSON.stringify(all))
}
export const recall = (taskId) => JSON.parse(localStorage.getItem(SOURCES) || '{}')[taskId]
