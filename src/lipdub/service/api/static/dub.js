// New dub: video (upload or URL) -> identify -> faces on a timeline -> audio per face -> price -> submit.
import { api, esc, follow, remember, upload, usd } from './api.js'
import { ClipEditor, decodePeaks, renderFaces } from './timeline.js'

const IDENTIFY = 'kling-identify-face'
const SYNC = 'kling-advanced-lip-sync'
const uid = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`.replace('.', ''))

export async function showDub (view, isLive) {
  const { prices } = await api('/api/v1/usage?days=1')
  view.innerHTML = `
    <section class="card"><h1>New dub</h1>
      <label class="drop" id="drop">Drop a video here, or choose one:
        <input type="file" id="video-file" accept="video/*"></label>
      <form id="video-url-form" class="row"><label style="flex:1">…or a video URL
        <input id="video-url" type="url" placeholder="https://…/clip.mp4" style="width:100%"></label>
        <button type="submit" class="secondary">Use URL</button></form>
      <progress id="video-progress" max="1" value="0" hidden></progress>
      <p id="video-status" role="status"></p>
    </section>
    <section class="card" id="faces-card" hidden><h2>Faces</h2>
      <p class="muted">Click a face to give it new audio. Bars show when each face is visible.</p>
      <video id="preview" controls muted playsinline></video>
      <div id="faces-timeline"></div><div id="assignments"></div>
    </section>
    <section class="card" id="submit-card" hidden><h2>Render</h2>
      <div class="row"><label>Original audio volume (0–2)
        <input type="number" id="orig-volume" min="0" max="2" step="0.05" value="0.3"></label></div>
      <p>Price: <span class="price" id="price">—</span> <span class="muted" id="price-detail"></span></p>
      <button type="button" id="submit" disabled>Dub the video</button>
      <p id="submit-msg" role="alert"></p>
    </section>`
  const $ = (s) => view.querySelector(s)
  const state = { videoUrl: null, session: null, videoMs: 0, faces: new Map() }
  const status = (t, cls = '') => { $('#video-status').className = cls; $('#video-status').textContent = t }

  async function identify (videoUrl, previewSrc) {
    state.videoUrl = videoUrl
    $('#preview').src = previewSrc
    status(`Finding faces… (${usd(prices.identify_micros)})`)
    try {
      const { taskId } = await api('/api/v1/audio/generations', { method: 'POST', body: { model: IDENTIFY, video_url: videoUrl } })
      remember(taskId, { video: videoUrl })
      const t = await follow(taskId, (t) => status(`Finding faces… ${t.state} ${Math.round(100 * (t.progress || 0))}%`), isLive)
      if (!isLive()) return
      if (t.state === 'failed') return status(`${t.failMsg} The identification was refunded.`, 'error')
      await metadata($('#preview'))
      state.session = t.faceData.session_id
      state.videoMs = Math.round($('#preview').duration * 1000) || Math.max(...t.faceData.face_list.map((f) => f.end_time))
      status(`${t.faceData.face_list.length} face(s) found.`, 'ok')
      $('#faces-card').hidden = false
      $('#submit-card').hidden = false
      renderFaces($('#faces-timeline'), t.faceData.face_list, state.videoMs, pickFace)
    } catch (err) { status(explain(err), 'error') }
  }

  async function fromFile (file) {
    if (!file) return
    const bar = $('#video-progress')
    bar.hidden = false
    status(`Uploading ${file.name}…`)
    try {
      const up = await upload(file, (f) => { bar.value = f })
      bar.value = 1
      await identify(up.url, URL.createObjectURL(file))
    } catch (err) { status(explain(err), 'error') }
  }

  $('#video-file').addEventListener('change', (e) => fromFile(e.target.files[0]))
  const drop = $('#drop')
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over') })
  drop.addEventListener('dragleave', () => drop.classList.remove('over'))
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); fromFile(e.dataTransfer.files[0]) })
  $('#video-url-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const u = $('#video-url').value.trim()
    if (u) identify(u, u)
  })

  function pickFace (faceId, button) {
    if (state.faces.has(faceId)) return state.faces.get(faceId).el.querySelector('input').focus()
    button.setAttribute('aria-pressed', 'true')
    const el = document.createElement('div')
    el.className = 'assign'
    el.dataset.face = faceId
    el.innerHTML = `<h2>${esc(faceId)}: new audio</h2>
      <div class="row"><label>Audio file <input type="file" class="audio-file" accept="audio/*"></label>
        <form class="row audio-url-form"><label>…or audio URL <input type="url" class="audio-url"></label>
        <button type="submit" class="secondary">Use URL</button></form>
        <button type="button" class="secondary remove">Remove</button></div>
      <progress class="audio-progress" max="1" value="0" hidden></progress>
      <p class="audio-status" role="status"></p>
      <div class="editor" hidden>
        <canvas class="wave" tabindex="-1" aria-label="Waveform on the video timeline: drag to move, drag an edge to trim, drag the line to set the volume"></canvas>
        <div class="row">
          <label>Crop start (ms) <input type="number" name="startMs" min="0" step="10"></label>
          <label>Crop end (ms) <input type="number" name="endMs" min="0" step="10"></label>
          <label>Insert at (ms) <input type="number" name="insertMs" min="0" step="10"></label>
          <label>Volume (0–2) <input type="number" name="volume" min="0" max="2" step="0.05"></label>
        </div></div>`
    $('#assignments').append(el)
    const face = { el, url: null, editor: null }
    state.faces.set(faceId, face)
    const st = (t, cls = '') => { const p = el.querySelector('.audio-status'); p.className = `audio-status ${cls}`; p.textContent = t }
    el.querySelector('.remove').addEventListener('click', () => {
      el.remove(); state.faces.delete(faceId); button.setAttribute('aria-pressed', 'false'); updatePrice()
    })
    async function useAudio (url, bytes) {
      try {
        st('Reading the audio…')
        const { peaks, durationMs } = await decodePeaks(await bytes())
        face.url = url
        const s = { startMs: 0, endMs: Math.min(durationMs, state.videoMs), insertMs: 0, volume: 1, audioMs: durationMs }
        const inputs = [...el.querySelectorAll('.editor input')]
        const show = (s) => { for (const i of inputs) if (document.activeElement !== i) i.value = s[i.name]; updatePrice() }
        el.querySelector('.editor').hidden = false
        face.editor = new ClipEditor(el.querySelector('canvas'), state.videoMs, peaks, s, show)
        for (const i of inputs) i.addEventListener('change', () => face.editor.set({ [i.name]: Number(i.value) }))
        show(face.editor.s)
        st(`${(durationMs / 1000).toFixed(1)} s of audio.`, 'ok')
      } catch (err) { st(err.status ? explain(err) : `This audio could not be read (${err.message}).`, 'error') }
    }
    el.querySelector('.audio-file').addEventListener('change', async (e) => {
      const file = e.target.files[0]
      if (!file) return
      const bar = el.querySelector('.audio-progress')
      bar.hidden = false
      st(`Uploading ${file.name}…`)
      try {
        const up = await upload(file, (f) => { bar.value = f })
        await useAudio(up.url, () => file.arrayBuffer())
      } catch (err) { st(explain(err), 'error') }
    })
    el.querySelector('.audio-url-form').addEventListener('submit', (e) => {
      e.preventDefault()
      const u = el.querySelector('.audio-url').value.trim()
      if (u) useAudio(u, async () => (await fetch(u)).arrayBuffer())
    })
  }

  function entries () {
    const orig = Number($('#orig-volume').value)
    return [...state.faces].filter(([, f]) => f.editor).map(([id, f]) => {
      const s = f.editor.s
      return {
        face_id: id, sound_file: f.url, sound_start_time: s.startMs, sound_end_time: s.endMs,
        sound_insert_time: s.insertMs, sound_volume: s.volume, original_audio_volume: orig,
        // Audio past the video's end is cut rather than refused.
        sync_mode: 'cut_off'
      }
    })
  }

  function updatePrice () {
    const list = entries()
    const blocks = list.reduce((n, e) => {
      const plays = Math.min(e.sound_end_time - e.sound_start_time, state.videoMs - e.sound_insert_time)
      return n + Math.ceil(plays / prices.sync_block_ms)
    }, 0)
    $('#price').textContent = list.length ? usd(blocks * prices.sync_block_micros) : '—'
    $('#price-detail').textContent = list.length
      ? `${list.length} face(s), ${blocks} × ${prices.sync_block_ms / 1000} s block(s) at ${usd(prices.sync_block_micros)}`
      : 'give at least one face new audio'
    $('#submit').disabled = !list.length
  }
  $('#orig-volume').addEventListener('change', updatePrice)

  $('#submit').addEventListener('click', async () => {
    const msg = $('#submit-msg')
    msg.className = ''
    msg.textContent = 'Submitting…'
    $('#submit').disabled = true
    try {
      const body = { model: SYNC, session_id: state.session, face_choose: entries(), external_task_id: `console-${uid()}` }
      const { taskId } = await api('/api/v1/audio/generations', { method: 'POST', body })
      remember(taskId, { video: state.videoUrl })
      location.hash = `#/task/${encodeURIComponent(taskId)}`
    } catch (err) {
      msg.className = 'error'
      msg.textContent = explain(err)
      $('#submit').disabled = false
    }
  })
}

export function explain (err) {
  if (err.status === 402) {
    const d = err.data || {}
    const need = d.needed_micros !== undefined ? ` It needs ${usd(d.needed_micros)}; the balance is ${usd(d.balance_micros ?? 0)}.` : ''
    return `Not enough credit: ${err.message}${need} Nothing was charged. Ask the operator to add credits (lipdub credits add ACCOUNT 10), then submit again.`
  }
  return err.message
}

function metadata (video) {
  if (video.readyState >= 1) return Promise.resolve()
  return new Promise((resolve) => {
    video.addEventListener('loadedmetadata', resolve, { once: true })
    video.addEventListener('error', resolve, { once: true })
  })
}
