// genbot local chat: the browser side of adapters/local. The HTTP + WebSocket contract is in
// docs/local-chat.md. Every string from the server may contain member input (prompts, names, error
// text), so this file never uses innerHTML: all DOM is built with createElement + textContent.
'use strict';

const $ = (sel) => document.querySelector(sel);
const scroller = $('#messages');
const listEl = $('#message-list');
const input = $('#input');
const popup = $('#command-popup');
const popupList = $('#command-list');
const hintEl = $('#hint');
const sendError = $('#send-error');
const memberSelect = $('#member');
const connDot = $('#conn');

const STORAGE_KEY = 'genbot.local.member';
const NEAR_BOTTOM_PX = 48;

const state = {
  commands: [],
  members: [],
  channel: 'general',
  userId: null,
  shown: new Map(),      // message id (string) -> .message element
  ws: null,
  wsGen: 0,              // bumped on every (re)connect so callbacks of old sockets are ignored
  retry: 0,
  retryTimer: null,
  historySeq: 0,         // only the newest /api/messages answer is applied
  historyPending: false,
  buffered: [],          // WebSocket messages that arrived while history was loading
  stick: true,           // the list is scrolled to the bottom: follow new content
  popupItems: [],
  popupIndex: 0,
  popupNavigated: false, // the user moved the selection with the arrow keys
  lastSent: '',
  files: [],             // uploads for the next command: {file: key, name}
};

// ---------------------------------------------------------------- helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}

// Only same-origin paths such as "/blobs/abc" are used as image sources. "//host/x" and "/\host/x"
// start with "/" too but browsers resolve them to another origin, hence the extra URL check.
function safeUrl(url) {
  if (typeof url !== 'string' || !url.startsWith('/')) return null;
  try {
    return new URL(url, location.origin).origin === location.origin ? url : null;
  } catch {
    return null;
  }
}

async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new Error('Cannot reach the chat server.');
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON: fall through to the status text */ }
  if (!res.ok || (data && data.ok === false)) {
    throw new Error((data && data.error) || `Request failed: ${res.status} ${res.statusText}`.trim());
  }
  return data || {};
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt) => Math.min(1000 * 2 ** attempt, 5000); // 1 s, 2 s, 4 s, 5 s, 5 s, ...

function showError(message) {
  sendError.textContent = message;
  sendError.hidden = false;
}

function clearError() {
  sendError.textContent = '';
  sendError.hidden = true;
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const time = d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  return d.toDateString() === new Date().toDateString() ? `Today at ${time}` : `${d.toLocaleDateString()} ${time}`;
}

function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return n >= 1e3 ? `${Math.round(n / 1e3)} kB` : `${n} B`;
}

const AVATAR_COLORS = ['#5865f2', '#3ba55c', '#faa61a', '#ed4245', '#eb459e', '#1abc9c', '#747f8d'];
function avatarColor(key) {
  let h = 0;
  for (const ch of String(key)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return AVATAR_COLORS[h % AVATAR_COLORS.length];
}

// ---------------------------------------------------------------- rendering

function renderMessage(msg) {
  const author = msg.author || {};
  const name = author.name || author.id || 'unknown';
  const root = el('div', 'message');
  root.dataset.id = String(msg.id);
  if (msg.ephemeral_to) root.classList.add('ephemeral');
  if (author.bot) root.classList.add('from-bot');

  const avatar = el('div', 'avatar', (Array.from(name.trim())[0] || '?').toUpperCase());
  avatar.style.backgroundColor = avatarColor(author.id || name);
  avatar.setAttribute('aria-hidden', 'true');

  const body = el('div', 'body');
  const meta = el('div', 'meta');
  meta.append(el('span', 'author', name));
  if (author.bot) meta.append(el('span', 'bot-tag', 'BOT'));
  const time = el('time', 'time', formatTime(msg.created_at));
  if (msg.created_at) {
    time.dateTime = msg.created_at;
    time.title = new Date(msg.created_at).toLocaleString();
  }
  meta.append(time);
  // Status cards are edited on every progress tick; "(edited)" only means something on plain text.
  if (msg.edited_at && !msg.status) meta.append(el('span', 'edited', '(edited)'));
  body.append(meta);

  if (msg.text != null && msg.text !== '') body.append(el('div', 'text', msg.text));
  if (msg.status) body.append(renderStatus(msg.id, msg.status));
  if (msg.ephemeral_to) body.append(el('div', 'ephemeral-note', 'Only you can see this'));

  root.append(avatar, body);
  return root;
}

function renderStatus(messageId, s) {
  const st = String(s.state || 'unknown');
  const card = el('div', 'status-card');
  card.classList.add(`state-${st.replace(/[^a-z_]/gi, '')}`);
  card.dataset.job = String(s.job);
  card.dataset.state = st;

  const used = el('div', 'used');
  used.append(el('span', 'requester', s.requested_by || 'someone'), ' used ', el('span', 'command', `/${s.kind || 'imagine'}`));
  card.append(used, el('div', 'headline', s.headline || st));
  if (s.prompt) card.append(el('blockquote', 'prompt', s.prompt)); // quote marks come from CSS
  if (s.details) card.append(el('div', 'details', s.details));
  if (s.text) card.append(el('div', 'answer', s.text)); // an answer, as it streams in

  if (s.progress != null) {
    const pct = Math.round(Math.min(1, Math.max(0, Number(s.progress) || 0)) * 100);
    const progress = el('div', 'progress');
    progress.setAttribute('role', 'progressbar');
    progress.setAttribute('aria-valuemin', '0');
    progress.setAttribute('aria-valuemax', '100');
    progress.setAttribute('aria-valuenow', String(pct));
    const bar = el('div', 'progress-bar');
    const fill = el('div', 'progress-fill');
    fill.style.width = `${pct}%`;
    bar.append(fill);
    progress.append(bar, el('span', 'progress-text', `${pct}%`));
    card.append(progress);
  }

  const preview = st === 'running' ? safeUrl(s.preview_url) : null;
  if (preview) {
    const img = el('img', 'preview');
    img.src = preview;
    img.alt = 'Preview of the image being generated';
    card.append(img);
  }

  const result = st === 'succeeded' ? safeUrl(s.image_url) : null;
  if (result) {
    const link = el('a', 'result-link');
    link.href = result;
    link.target = '_blank';
    link.rel = 'noopener';
    link.title = 'Open the full image in a new tab';
    const img = el('img', 'result');
    img.src = result;
    img.alt = s.prompt ? `Generated image: ${s.prompt}` : 'Generated image';
    link.append(img);
    card.append(link);
  }

  // The files a result carries besides its image: each image of several, or a file.
  const files = st === 'succeeded' && Array.isArray(s.files) ? s.files : [];
  if (files.length) {
    const list = el('div', 'result-files');
    for (const f of files) {
      const url = safeUrl(f.url);
      if (!url) continue;
      const link = el('a', 'result-file', `${f.name} · ${formatSize(f.size)}`);
      link.href = url;
      link.download = String(f.name || 'file');
      list.append(link);
    }
    card.append(list);
  }

  if (s.error) {
    const box = el('div', 'error');
    box.append(el('strong', 'error-title', s.error.title || 'Something went wrong'));
    if (s.error.what) box.append(el('div', 'error-what', s.error.what));
    if (s.error.todo) box.append(el('div', 'error-todo', s.error.todo));
    card.append(box);
  }

  if (s.note) card.append(el('div', 'note', s.note));

  const buttons = Array.isArray(s.buttons) ? s.buttons : [];
  if (buttons.length) {
    const row = el('div', 'buttons');
    for (const b of buttons) {
      const btn = el('button', `btn ${b.style === 'danger' ? 'btn-danger' : 'btn-secondary'}`, b.label || b.action);
      btn.type = 'button';
      btn.dataset.action = String(b.action);
      btn.addEventListener('click', () => pressButton(messageId, b.action, btn));
      row.append(btn);
    }
    card.append(row);
  }
  return card;
}

// When a card is replaced, keep the already-decoded image if its URL did not change; if it did,
// keep showing the old frame until the new one has loaded. Without this, every progress update
// would make the preview blink.
function carryImage(oldRoot, newRoot, selector) {
  const oldImg = oldRoot.querySelector(selector);
  const newImg = newRoot.querySelector(selector);
  if (!oldImg || !newImg || !oldImg.complete || oldImg.naturalWidth === 0) return;
  newImg.replaceWith(oldImg);
  if (oldImg.getAttribute('src') === newImg.getAttribute('src')) return;
  const swap = () => { if (oldImg.isConnected) oldImg.replaceWith(newImg); };
  newImg.addEventListener('load', swap, { once: true });
  newImg.addEventListener('error', swap, { once: true });
}

function upsert(msg) {
  if (!msg || msg.id == null) return;
  const key = String(msg.id);
  const node = renderMessage(msg);
  const old = state.shown.get(key);
  if (old && old.isConnected) {
    carryImage(old, node, 'img.preview');
    carryImage(old, node, 'img.result');
    old.replaceWith(node);
  } else {
    // Ids grow over time; insert in id order so a re-fetch after a reconnect fills gaps correctly.
    let before = listEl.lastElementChild;
    while (before && Number(before.dataset.id) > Number(msg.id)) before = before.previousElementSibling;
    if (before) before.after(node); else listEl.prepend(node);
  }
  state.shown.set(key, node);
  if (state.stick) scrollToBottom();
}

function scrollToBottom() {
  scroller.scrollTop = scroller.scrollHeight;
}

// `stick` is recomputed only on scroll events: content growing (new messages, images finishing
// loading) does not fire one, so we keep following the bottom until the user scrolls up.
scroller.addEventListener('scroll', () => {
  state.stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
});
const resizeObserver = new ResizeObserver(() => { if (state.stick) scrollToBottom(); });
resizeObserver.observe(listEl);
resizeObserver.observe(scroller);

// ---------------------------------------------------------------- server sync

async function loadHistory() {
  const seq = ++state.historySeq;
  state.historyPending = true;
  try {
    const data = await api('GET', `/api/messages?user_id=${encodeURIComponent(state.userId)}`);
    if (seq !== state.historySeq) return; // superseded by a newer load or a member switch
    for (const msg of data.messages || []) upsert(msg);
  } catch (err) {
    if (seq === state.historySeq) showError(`Could not load messages: ${err.message}`);
  } finally {
    // Live messages received meanwhile are newer than (or as new as) the snapshot: apply them last.
    if (seq === state.historySeq) {
      state.historyPending = false;
      const queued = state.buffered;
      state.buffered = [];
      queued.forEach(upsert);
    }
  }
}

function setConn(status) {
  const label = { connected: 'Connected', connecting: 'Connecting', reconnecting: 'Reconnecting' }[status];
  connDot.dataset.conn = status;
  connDot.title = label;
  connDot.setAttribute('aria-label', label);
}

function connect() {
  clearTimeout(state.retryTimer);
  const gen = ++state.wsGen;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  let ws;
  try {
    ws = new WebSocket(`${proto}://${location.host}/ws?user_id=${encodeURIComponent(state.userId)}`);
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  if (connDot.dataset.conn !== 'reconnecting') setConn('connecting');

  ws.addEventListener('open', () => {
    if (gen !== state.wsGen) return;
    state.retry = 0;
    setConn('connected');
    loadHistory(); // catch up on whatever happened while we were not subscribed
  });
  ws.addEventListener('message', (event) => {
    if (gen !== state.wsGen) return;
    let data;
    try { data = JSON.parse(event.data); } catch { return; }
    if (!data || data.type !== 'message' || !data.message) return;
    if (state.historyPending) state.buffered.push(data.message);
    else upsert(data.message);
  });
  ws.addEventListener('close', () => {
    if (gen !== state.wsGen) return;
    state.ws = null;
    setConn('reconnecting');
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, backoff(state.retry++));
}

function disconnect() {
  state.wsGen++; // the old socket's close event is now ignored, so it will not reconnect
  clearTimeout(state.retryTimer);
  if (state.ws) state.ws.close();
  state.ws = null;
  state.retry = 0;
}

function selectMember(id) {
  state.userId = id;
  memberSelect.value = id;
  try { localStorage.setItem(STORAGE_KEY, id); } catch { /* storage disabled: not remembered */ }
  disconnect();
  listEl.replaceChildren();
  state.shown.clear();
  state.buffered = [];
  state.stick = true;
  clearError();
  // Load right away so the page is not empty if the socket cannot connect; the socket's open
  // handler loads again, and only that newer answer is applied.
  loadHistory();
  connect();
}

// ---------------------------------------------------------------- actions

async function send() {
  const text = input.value;
  if (!text.trim() || !state.userId) return;
  input.value = '';
  updateComposer();
  clearError();
  state.lastSent = text;
  const body = { user_id: state.userId, text };
  if (state.files.length && text.trim().startsWith('/')) {
    body.files = state.files.map((f) => f.file);
    state.files = [];
    renderAttachments();
  }
  try {
    await api('POST', '/api/command', body);
  } catch (err) {
    showError(err.message);
  }
}

// A file is uploaded as soon as it is picked (its bytes as the body, as docs/local-chat.md says)
// and goes with the next command, to its file options.
async function attach(file) {
  clearError();
  let res;
  try {
    const query = new URLSearchParams({ user_id: state.userId, name: file.name });
    res = await fetch(`/api/uploads?${query}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: file,
    });
  } catch {
    showError('Cannot reach the chat server.');
    return;
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok || !data || !data.ok) {
    showError((data && data.error) || `Upload failed: ${res.status}`);
    return;
  }
  state.files.push({ file: data.file, name: data.name });
  renderAttachments();
  input.focus();
}

function renderAttachments() {
  const box = $('#attachments');
  box.replaceChildren(...state.files.map((f, i) => {
    const chip = el('span', 'attachment', f.name);
    const remove = el('button', null, '×');
    remove.type = 'button';
    remove.setAttribute('aria-label', `Remove ${f.name}`);
    remove.addEventListener('click', () => { state.files.splice(i, 1); renderAttachments(); });
    chip.append(remove);
    return chip;
  }));
  box.hidden = state.files.length === 0;
}

async function pressButton(messageId, action, btn) {
  clearError();
  btn.disabled = true;
  try {
    await api('POST', '/api/action', { user_id: state.userId, message_id: messageId, action });
  } catch (err) {
    showError(err.message);
  } finally {
    btn.disabled = false; // usually the card is replaced by the server's update anyway
  }
}

// ---------------------------------------------------------------- composer: popup and hints

function updateComposer() {
  const text = input.value;
  // Command names may have two words (/admin ban): the longest name the text starts with wins.
  const command = state.commands
    .filter((c) => text.toLowerCase().startsWith(`/${c.name} `))
    .sort((a, b) => b.name.length - a.name.length)[0];
  const typingName = /^\/(\S*(?: \S*)?)$/.exec(text);
  if (typingName && !command) showPopup(typingName[1]); else hidePopup();
  if (command) showHint(command, text); else hintEl.hidden = true;
}

function visibleCommands() {
  // Admin commands are offered to admins only (the server checks every call anyway).
  const me = state.members.find((m) => m.id === state.userId);
  return state.commands.filter((c) => !c.admin || (me && me.admin));
}

function showPopup(prefix) {
  const q = prefix.toLowerCase();
  const matches = visibleCommands().filter((c) => String(c.name).toLowerCase().startsWith(q));
  if (!matches.length) { hidePopup(); return; }
  state.popupItems = matches;
  state.popupIndex = 0;
  state.popupNavigated = false;
  popupList.replaceChildren(...matches.map((c) => {
    const item = el('li', 'command-item');
    item.dataset.name = c.name;
    item.setAttribute('role', 'option');
    item.append(el('span', 'command-name', `/${c.name}`), el('span', 'command-desc', c.description || ''));
    item.addEventListener('mousedown', (e) => e.preventDefault()); // keep the focus in the input
    item.addEventListener('click', () => complete(c.name));
    return item;
  }));
  highlightPopup();
  popup.hidden = false;
}

function hidePopup() {
  popup.hidden = true;
  state.popupItems = [];
}

function highlightPopup() {
  [...popupList.children].forEach((item, i) => {
    item.classList.toggle('selected', i === state.popupIndex);
    item.setAttribute('aria-selected', String(i === state.popupIndex));
  });
}

function complete(name) {
  input.value = `/${name} `;
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  updateComposer();
}

function optionLabel(o) {
  let label = `${o.name}:`;
  if (Array.isArray(o.choices) && o.choices.length) label += ` ${o.choices.join(' | ')}`;
  else if (o.min != null && o.max != null) label += ` ${o.min}–${o.max}`;
  else if (o.min != null) label += ` ≥ ${o.min}`;
  else if (o.max != null) label += ` ≤ ${o.max}`;
  return o.required ? label : `[${label}]`;
}

function showHint(command, text) {
  const options = command.options || [];
  // The option being typed: the last "name:" in the text, else the first required option
  // (plain "/imagine a red fox" fills the prompt).
  const rest = text.slice(command.name.length + 2);
  let active = null;
  for (const m of rest.matchAll(/(?:^|\s)([A-Za-z_]\w*):/g)) {
    active = options.find((o) => o.name === m[1]) || active;
  }
  if (!active && rest.trim()) active = options.find((o) => o.required) || null;

  const line = el('div', 'hint-line');
  line.append(el('span', 'hint-command', `/${command.name}`));
  for (const o of options) {
    const span = el('span', `hint-option${o.required ? ' required' : ''}${o === active ? ' active' : ''}`, optionLabel(o));
    if (o.description) span.title = o.description;
    line.append(span);
  }
  const desc = active ? `${active.name}: ${active.description || ''}` : command.description || '';
  hintEl.replaceChildren(line, el('div', 'hint-desc', desc));
  hintEl.hidden = false;
}

input.addEventListener('input', updateComposer);

input.addEventListener('keydown', (e) => {
  if (e.isComposing) return;
  const open = !popup.hidden && state.popupItems.length > 0;
  if (open && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
    e.preventDefault();
    const n = state.popupItems.length;
    state.popupIndex = (state.popupIndex + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
    state.popupNavigated = true;
    highlightPopup();
  } else if (open && (e.key === 'Tab' || (e.key === 'Enter' && state.popupNavigated))) {
    // Tab always completes; Enter completes only after the user picked an entry with the arrows,
    // otherwise Enter sends what was typed.
    e.preventDefault();
    complete(state.popupItems[state.popupIndex].name);
  } else if (open && e.key === 'Escape') {
    e.preventDefault();
    hidePopup();
  } else if (!open && e.key === 'ArrowUp' && input.value === '' && state.lastSent) {
    e.preventDefault(); // recall the last sent line, handy after an error
    input.value = state.lastSent;
    updateComposer();
  }
});

$('#composer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});

input.addEventListener('blur', () => setTimeout(hidePopup, 150));
input.addEventListener('focus', updateComposer);

memberSelect.addEventListener('change', () => {
  state.files = []; // uploads are the member's own
  renderAttachments();
  selectMember(memberSelect.value);
});

$('#attach').addEventListener('click', () => $('#file-input').click());
$('#file-input').addEventListener('change', (e) => {
  for (const file of e.target.files) attach(file);
  e.target.value = '';
});

// ---------------------------------------------------------------- start

async function init() {
  let session;
  for (let attempt = 0; !session; attempt++) {
    try {
      session = await api('GET', '/api/session');
    } catch (err) {
      setConn('reconnecting');
      showError(`${err.message} Retrying…`);
      await sleep(backoff(attempt));
    }
  }
  clearError();
  state.commands = Array.isArray(session.commands) ? session.commands : [];
  state.members = Array.isArray(session.members) ? session.members : [];
  state.channel = session.channel || 'general';

  document.title = `#${state.channel} · genbot local chat`;
  $('#channel-name').textContent = state.channel;
  $('#intro-channel').textContent = state.channel;
  input.placeholder = `Message #${state.channel} — type / for commands`;

  memberSelect.replaceChildren(...state.members.map((m) => {
    const option = el('option', null, m.admin ? `${m.name} (admin)` : m.name);
    option.value = m.id;
    return option;
  }));
  if (!state.members.length) {
    showError('The server lists no members, so there is nobody to chat as.');
    return;
  }
  let saved = null;
  try { saved = localStorage.getItem(STORAGE_KEY); } catch { /* storage disabled */ }
  selectMember(state.members.some((m) => m.id === saved) ? saved : state.members[0].id);
}

init();
