// Routing (#/dub, #/history, #/account, #/task/<id>) and the sign-in gate.
import { api, clearKey, esc, getKey, setKey } from './api.js'
import { showAccount } from './account.js'
import { showDub } from './dub.js'
import { showHistory } from './history.js'
import { showTask } from './task.js'

const view = document.getElementById('view')
const nav = document.getElementById('nav')
// Each render gets a generation number; long polls of a view the user left stop updating.
let generation = 0

function signIn (message = '') {
  nav.hidden = true
  view.innerHTML = `
    <section class="card" style="max-width:32rem;margin:2rem auto">
      <h1>Sign in</h1>
      <p class="muted">Paste an API key (from <code>lipdub keys create ACCOUNT</code>, or the
      one <code>make run</code> printed). It is kept in this browser tab only.</p>
      <form id="signin" class="row">
        <label style="flex:1">API key
          <input id="key" name="key" type="password" autocomplete="off" required style="width:100%"></label>
        <button type="submit">Sign in</button>
      </form>
      <p id="signin-msg" class="error" role="alert">${esc(message)}</p>
    </section>`
  const form = view.querySelector('#signin')
  view.querySelector('#key').focus()
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const key = form.key.value.trim()
    const msg = view.querySelector('#signin-msg')
    msg.textContent = 'Checking…'
    try {
      await api('/api/v1/usage?days=1', { key })
      setKey(key)
      go('#/dub')
    } catch (err) {
      msg.textContent = err.status === 401
        ? `This key was not accepted: ${err.message}`
        : err.message
    }
  })
}

// Exactly one render per navigation: a hash change renders through its event, so only an
// unchanged hash renders here (two renders raced, and the first one's upload went unseen).
function go (hash) {
  if (location.hash === hash) route()
  else location.hash = hash
}

export async function route () {
  const gen = ++generation
  const isLive = () => gen === generation
  if (!getKey()) return signIn()
  nav.hidden = false
  const [, page = 'dub', arg] = location.hash.split('/')
  for (const a of nav.querySelectorAll('a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${page}`)
  }
  view.innerHTML = ''
  try {
    if (page === 'history') await showHistory(view, isLive)
    else if (page === 'account') await showAccount(view)
    else if (page === 'task' && arg) await showTask(view, decodeURIComponent(arg), isLive)
    else await showDub(view, isLive)
  } catch (err) {
    if (err.status === 401) { clearKey(); return signIn('Your key is no longer valid: sign in again.') }
    if (isLive()) view.insertAdjacentHTML('beforeend', `<p class="error" role="alert">${esc(err.message)}</p>`)
  }
}

document.getElementById('signout').addEventListener('click', () => {
  clearKey()
  go('')
})
window.addEventListener('hashchange', () => { route(); view.focus() })
route()
