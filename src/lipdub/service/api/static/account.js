// Balance, reserved amount, recent ledger rows and the price list.
import { api, esc, usd, when } from './api.js'

export async function showAccount (view) {
  const a = await api('/api/v1/account')
  const p = a.prices
  view.innerHTML = `
    <section class="card"><h1>Account ${esc(a.account)}</h1>
      <p>Balance <strong id="balance">${usd(a.balance_micros)}</strong>
      · reserved for running tasks <strong id="reserved">${usd(a.reserved_micros)}</strong></p>
      <p class="muted">Credits are added by the operator: <code>lipdub credits add ${esc(a.account)} 10</code>.</p>
    </section>
    <section class="card"><h2>Prices</h2>
      <ul id="prices">
        <li>Face identification: ${usd(p.identify_micros)} per video</li>
        <li>Lip-sync: ${usd(p.sync_block_micros)} per started ${p.sync_block_ms / 1000} s of audio, per face</li>
      </ul>
      <p class="muted">A failed task is refunded in full.</p>
    </section>
    <section class="card"><h2>Recent ledger</h2><div class="scroll"><table id="ledger">
      <thead><tr><th>When</th><th>Kind</th><th>Amount</th><th>Balance after</th><th>Reserved after</th><th>Task</th></tr></thead>
      <tbody>${a.ledger.map((e) => `<tr><td>${when(e.created_ms)}</td><td>${esc(e.kind)}</td>
        <td>${usd(e.amount_micros)}</td><td>${usd(e.balance_after)}</td><td>${usd(e.reserved_after)}</td>
        <td>${e.task_id ? `<a href="#/task/${esc(e.task_id)}">${esc(e.task_id.slice(0, 12))}…</a>` : esc(e.note)}</td></tr>`).join('')}
      </tbody></table></div></section>`
}
