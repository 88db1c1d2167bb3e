// The callback receiver of the contract's seed document (../shared/seed/, Node/Express),
// copied unchanged between the markers, inside the smallest app that runs it.
// Usage: node seed-receiver.cjs PORT   (express resolved through NODE_PATH)
const express = require('express')
const app = express()
// --- seed: begin
app.post('/webhook/kling-lip-sync', express.json(), (req, res) => {
const { taskId, state, resultJson, failMsg } = req.body.data
if (state === 'completed') {
const r = JSON.parse(resultJson)
console.log('lip-sync ready', taskId, r.resultUrls[0])
} else {
console.warn('lip-sync failed', taskId, failMsg)
}
res.status(200).end() // must be 2xx, otherwise we retry
})
// --- seed: end
app.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('listening'))
