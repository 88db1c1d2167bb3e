// The video's timeline: faces with their visible spans, and per face a clip editor whose
// waveform sits on that same timeline (drag to move, trim either end, or set the gain).
import { esc } from './api.js'

// Why a span of a face is not re-rendered (identify's not_renderable reasons).
const OFF = { turned: 'head turned too far', mouth_covered: 'mouth covered' }

const pct = (ms, total) => `${Math.max(0, Math.min(100, (100 * ms) / total)).toFixed(3)}%`

export function renderFaces (el, faces, videoMs, onPick) {
  const secs = videoMs / 1000
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => `<span>${(f * secs).toFixed(1)} s</span>`).join('')
  el.innerHTML = `<div class="timeline" id="faces">${faces.map((f) => `
    <div class="track">
      <button type="button" class="face" data-face="${esc(f.face_id)}" aria-pressed="false"
        title="Give ${esc(f.face_id)} new audio"><img src="${esc(f.face_reference)}" alt="${esc(f.face_id)}"></button>
      <div class="lane" role="img" aria-label="${esc(f.face_id)} visible ${(f.start_time / 1000).toFixed(1)}–${(f.end_time / 1000).toFixed(1)} s">
        <div class="span" style="left:${pct(f.start_time, videoMs)};width:${pct(f.end_time - f.start_time, videoMs)}"></div>
        ${(f.not_renderable || []).map((n) => `<div class="off" title="${esc(OFF[n.reason] || n.reason)} ${(n.start_time / 1000).toFixed(2)}–${(n.end_time / 1000).toFixed(2)} s: left as it is"
          style="left:${pct(n.start_time, videoMs)};width:${pct(n.end_time - n.start_time, videoMs)}"></div>`).join('')}
      </div></div>`).join('')}
    <div class="ruler" aria-hidden="true">${ticks}</div></div>`
  if (onPick) {
    for (const b of el.querySelectorAll('button.face')) b.addEventListener('click', () => onPick(b.dataset.face, b))
  }
}

export async function decodePeaks (arrayBuffer) {
  // An OfflineAudioContext decodes without needing a user gesture or an output device.
  const ctx = new OfflineAudioContext(1, 1, 44100)
  const buf = await ctx.decodeAudioData(arrayBuffer)
  const data = buf.getChannelData(0)
  const n = 2000
  const step = Math.max(1, Math.floor(data.length / n))
  const peaks = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    let m = 0
    for (let j = i * step; j < Math.min(data.length, (i + 1) * step); j++) m = Math.max(m, Math.abs(data[j]))
    peaks[i] = m
  }
  return { peaks, durationMs: Math.round(buf.duration * 1000) }
}

const MIN_CLIP = 1000
const EDGE_PX = 8

// s: {startMs, endMs, insertMs, volume, audioMs}; onChange(s) after every edit.
export class ClipEditor {
  constructor (canvas, videoMs, peaks, s, onChange) {
    Object.assign(this, { canvas, videoMs, peaks, s, onChange })
    canvas.addEventListener('pointerdown', (e) => this.down(e))
    canvas.addEventListener('pointermove', (e) => this.move(e))
    canvas.addEventListener('pointerup', () => { this.drag = null })
    new ResizeObserver(() => this.draw()).observe(canvas)
    this.draw()
  }

  x (ms) { return (ms / this.videoMs) * this.canvas.clientWidth }
  ms (px) { return (px / this.canvas.clientWidth) * this.videoMs }

  set (patch) {
    const s = { ...this.s, ...patch }
    s.startMs = Math.round(Math.max(0, Math.min(s.startMs, s.audioMs - MIN_CLIP)))
    s.endMs = Math.round(Math.max(s.startMs + MIN_CLIP, Math.min(s.endMs, s.audioMs)))
    s.insertMs = Math.round(Math.max(0, Math.min(s.insertMs, this.videoMs - MIN_CLIP)))
    s.volume = Math.round(Math.max(0, Math.min(2, s.volume)) * 100) / 100
    this.s = s
    this.draw()
    this.onChange(s)
  }

  gainY () { return this.canvas.clientHeight * (1 - this.s.volume / 2) }

  down (e) {
    const { s } = this
    const x = e.offsetX
    const left = this.x(s.insertMs)
    const right = this.x(s.insertMs + s.endMs - s.startMs)
    if (x < left - EDGE_PX || x > right + EDGE_PX) return
    this.canvas.setPointerCapture(e.pointerId)
    const mode = Math.abs(x - left) <= EDGE_PX ? 'left'
      : Math.abs(x - right) <= EDGE_PX ? 'right'
        : Math.abs(e.offsetY - this.gainY()) <= EDGE_PX ? 'gain' : 'move'
    this.drag = { mode, x, y: e.offsetY, s0: { ...s } }
  }

  move (e) {
    const d = this.drag
    if (!d) return
    const dms = this.ms(e.offsetX - d.x)
    const s0 = d.s0
    if (d.mode === 'move') this.set({ insertMs: s0.insertMs + dms })
    // Trimming the left edge keeps the rest of the clip where it was on the timeline.
    else if (d.mode === 'left') {
      const dd = Math.max(-s0.startMs, Math.min(dms, s0.endMs - MIN_CLIP - s0.startMs, this.videoMs))
      this.set({ startMs: s0.startMs + dd, insertMs: s0.insertMs + dd })
    } else if (d.mode === 'right') this.set({ endMs: s0.endMs + dms })
    else this.set({ volume: s0.volume - (2 * (e.offsetY - d.y)) / this.canvas.clientHeight })
  }

  draw () {
    const c = this.canvas
    const w = c.clientWidth
    const h = c.clientHeight
    if (!w) return
    c.width = w * devicePixelRatio
    c.height = h * devicePixelRatio
    const g = c.getContext('2d')
    g.scale(devicePixelRatio, devicePixelRatio)
    g.clearRect(0, 0, w, h)
    const { s, peaks } = this
    const x0 = this.x(s.insertMs)
    const x1 = this.x(s.insertMs + s.endMs - s.startMs)
    const xv = Math.min(x1, w)
    g.fillStyle = 'rgba(125,156,240,.25)'
    g.fillRect(x0, 0, xv - x0, h)
    g.fillStyle = '#9fb6ff'
    for (let px = Math.floor(x0); px < xv; px++) {
      const ms = s.startMs + this.ms(px - x0)
      const p = peaks[Math.min(peaks.length - 1, Math.floor((ms / s.audioMs) * peaks.length))] || 0
      const a = Math.min(1, p * s.volume) * (h / 2 - 4)
      g.fillRect(px, h / 2 - a, 1, 2 * a)
    }
    if (x1 > w) { // past the video's end: cut (sync_mode cut_off)
      g.fillStyle = 'rgba(255,255,255,.15)'
      g.fillRect(w - 2, 0, 2, h)
    }
    g.fillStyle = '#f0a500'
    g.fillRect(x0, 0, 3, h)
    g.fillRect(xv - 3, 0, 3, h)
    g.fillRect(x0, this.gainY() - 1, xv - x0, 2)
  }
}
