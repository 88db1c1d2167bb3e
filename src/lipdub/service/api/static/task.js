// One task: live state and progress, then its result (beside the original) or its faces.
import { api, esc, follow, recall, usd } from './api.js'
import { renderFaces } from './timeline.js'

export async function showTask (view, taskId, isLive) {
  view.innerHTML = `<section class="card"><h1>Task <code>${esc(taskId)}</code></h1>
    <p>State: <span class="state" id="task-state">…</span> <span id="task-model" class="muted"></span></p>
    <progress id="task-progress" max="1" value="0"></progress>
    <div id="task-body"></div></section>`
  const $ = (s) => view.querySelector(s)
  const show = (t) => {
    $('#task-state').textContent = t.state
    $('#task-model').textContent = t.model
    $('#task-progress').value = t.state === 'completed' ? 1 : t.progress || 0
  }
  const t = await follow(taskId, show, isLive)
  if (!isLive()) return
  $('#task-progress').hidden = true
  const body = $('#task-body')
  if (t.state === 'failed') {
    const { costs } = await api(`/api/v1/account?task_ids=${encodeURIComponent(taskId)}`)
    body.innerHTML = `<p class="error" id="fail-msg" role="alert">${esc(t.failMsg)}</p>
      <p id="refund">Its price (${usd(costs[taskId] ?? 0)}) was refunded to your balance.</p>
      <p><a href="#/dub">Try another video</a></p>`
  } else if (t.expired) {
    body.innerHTML = '<p>This result was deleted after its retention period.</p>'
  } else if (t.faceData) {
    body.innerHTML = `<video id="preview" controls muted playsinline></video><div id="faces-timeline"></div>`
    const src = recall(taskId)?.video
    const v = $('#preview')
    if (src) v.src = src; else v.hidden = true
    const end = Math.max(...t.faceData.face_list.map((f) => f.end_time), 1)
    renderFaces($('#faces-timeline'), t.faceData.face_list, end)
  } else {
    const url = t.resultUrls[0]
    const src = recall(taskId)?.video
    body.innerHTML = `<div class="pair">
        <figure><figcaption>Original</figcaption><video id="original" muted playsinline preload="auto" ${src ? `src="${esc(src)}"` : 'hidden'}></video></figure>
        <figure><figcaption>Dubbed (${t.videoDuration} s)</figcaption><video id="result" controls playsinline preload="auto" src="${esc(url)}"></video></figure>
      </div>
      <p class="row"><button type="button" id="play-both">Play both</button>
        <a class="button" id="download" href="${esc(url)}" download="dubbed-${esc(taskId)}.mp4">Download MP4</a></p>
      ${(t.notes || []).length ? `<ul class="notes">${t.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}`
    syncPair($('#result'), $('#original'), $('#play-both'))
  }
}

// The original follows the result: play, pause and seeks on the result drive both.
function syncPair (result, original, button) {
  const follow = () => {
    if (Math.abs(original.currentTime - result.currentTime) > 0.1) original.currentTime = result.currentTime
  }
  result.addEventListener('play', () => { follow(); original.play().catch(() => {}); button.textContent = 'Pause both' })
  result.addEventListener('pause', () => { original.pause(); follow(); button.textContent = 'Play both' })
  result.addEventListener('seeked', follow)
  result.addEventListener('ended', () => original.pause())
  button.addEventListener('click', () => (result.paused ? result.play() : result.pause()))
}
