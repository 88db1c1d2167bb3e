// The account's tasks, newest first, one page at a time (the list endpoint's cursor).
import { api, esc, usd, when } from './api.js'

const SHORT = { 'kling-identify-face': 'identify', 'kling-advanced-lip-sync': 'lip-sync' }

export async function showHistory (view, isLive) {
  view.innerHTML = `<section class="card"><h1>History</h1><div class="scroll"><table id="history" class="stack">
    <thead><tr><th>Created</th><th>Model</th><th>State</th><th>Cost</th><th></th></tr></thead>
    <tbody></tbody></table></div>
    <p><button type="button" class="secondary" id="more" hidden>Older tasks</button></p></section>`
  const body = view.querySelector('tbody')
  const more = view.querySelector('#more')
  let cursor = null
  async function page () {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''
    const { items, next_cursor: next } = await api(`/api/v1/audio/generations?limit=20${q}`)
    const ids = items.map((t) => t.taskId).join(',')
    const { costs } = ids ? await api(`/api/v1/account?task_ids=${encodeURIComponent(ids)}`) : { costs: {} }
    if (!isLive()) return
    if (!items.length && !cursor) body.innerHTML = '<tr><td colspan="5">No tasks yet: <a href="#/dub">dub a video</a>.</td></tr>'
    for (const t of items) {
      const cost = costs[t.taskId] ?? 0
      body.insertAdjacentHTML('beforeend', `<tr data-task="${esc(t.taskId)}">
        <td data-label="Created">${when(t.createTime)}</td><td data-label="Model">${SHORT[t.model] || esc(t.model)}</td>
        <td data-label="State" class="state-${esc(t.state)}">${esc(t.state)}</td>
        <td data-label="Cost">${t.state === 'failed' ? `<s>${usd(cost)}</s> refunded` : usd(cost)}</td>
        <td data-label=""><a href="#/task/${encodeURIComponent(t.taskId)}">Open</a></td></tr>`)
    }
    cursor = next
    more.hidden = !next
  }
  more.addEventListener('click', page)
  await page()
}
