// Keyhaven web console: one page, hash routing, talking only to its own origin's /api/*.
// Every string from the server (descriptions, tags, names, policies, audit fields) is
// treated as untrusted: it reaches the page through textContent and attributes only.
//
// The console is plain scripts that index.html loads in order with `defer`: this one, then
// charts.js, keys.js, key-page.js, identities.js and audit.js. They share one namespace,
// window.Keyhaven: each script takes what it uses from the scripts before it and adds what
// it offers. This one holds what every page needs: the state, DOM and time helpers, the
// banners, the calls to the back end, the session and sign-in, and the router.
'use strict';

window.Keyhaven = window.Keyhaven || {};

(() => {
  // ---------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------
  const state = {
    session: null, // {AccountId, UserName, Arn, Expires, CsrfToken}
    view: 0, // bumped on every navigation: async work of an older view renders nothing
    pendingNotice: '',
    pendingError: '',
    expiryTimer: 0,
    aliasesByKey: new Map(), // key id -> [alias names], from the last ListAliases
    keystoresSeen: new Set(['sealed']),
    keysFilter: { state: '', alias: '', tag: '', keystore: '' },
    keysSort: { column: '', direction: 'ascending' },
    simulator: { principal: '', policy: '', actions: '', resources: '*' },
    audit: {
      principal: '', key: '', operation: '', outcome: 'any', from: '', to: '',
      lines: 1000, showRequests: false,
    },
  };

  const CONCURRENCY = 8;

  // ---------------------------------------------------------------------------------------
  // DOM helpers (no innerHTML anywhere)
  // ---------------------------------------------------------------------------------------
  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else if (child instanceof Node) node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.setAttribute('class', value);
      else if (name === 'text') node.textContent = value;
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name === 'value') node.value = value;
      else if (name.startsWith('on') && typeof value === 'function') {
        node.addEventListener(name.slice(2), value);
      } else if (name === 'style') {
        throw new Error('inline styles are not allowed'); // CSP: use classes
      } else if (value === true) node.setAttribute(name, '');
      else node.setAttribute(name, String(value));
    }
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    return append(node, children);
  }

  function main() {
    return document.getElementById('main');
  }

  // replaceChildren with append's rules (null, false and nested arrays allowed).
  function fill(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  function setMain(...children) {
    fill(main(), ...children);
  }

  // An ARN or path with line-break opportunities after ':' and '/' (for narrow columns).
  function breakable(text) {
    const parts = String(text || '').split(/(?<=[:/])/);
    const out = [];
    parts.forEach((part, i) => {
      if (i) out.push(el('wbr'));
      out.push(part);
    });
    return out;
  }

  function loading(text = 'Loading…') {
    return el('p', { class: 'loading' }, text);
  }

  function tableWrap(table) {
    return el('div', { class: 'table-wrap' }, table);
  }

  function badge(text, kind) {
    return el('span', { class: `badge badge-${kind || 'neutral'}` }, text);
  }

  function stateBadge(keyState, id) {
    const kinds = {
      Enabled: 'ok', Disabled: 'off', PendingDeletion: 'danger', PendingImport: 'info',
      Unavailable: 'bad', Deleted: 'off',
    };
    return el('span', { class: `badge badge-${kinds[keyState] || 'neutral'}`, id }, keyState || '?');
  }

  function decisionBadge(decision) {
    const kinds = { allowed: 'ok', explicitDeny: 'bad', implicitDeny: 'off' };
    return badge(decision, kinds[decision] || 'neutral');
  }

  function keyLink(keyId, text) {
    return el('a', { href: `#/keys/${encodeURIComponent(keyId)}`, class: 'mono' }, text || keyId);
  }

  function field(id, label, control, hint, extraClass) {
    return el('div', { class: extraClass ? `field ${extraClass}` : 'field' },
      el('label', { for: id }, label), control,
      hint ? el('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
  }

  function prettyJson(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return text;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Times: local, ISO-like ("2026-11-28 21:30:01"), the UTC instant in <time datetime>
  // ---------------------------------------------------------------------------------------
  const pad = (n, width = 2) => String(n).padStart(width, '0');

  function formatLocal(date, withSeconds = true) {
    if (!(date instanceof Date) || Number.isNaN(date.getTime())) return '';
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    return `${day} ${clock}${withSeconds ? `:${pad(date.getSeconds())}` : ''}`;
  }

  function fromEpochSeconds(seconds) {
    if (seconds === undefined || seconds === null || seconds === '') return null;
    const n = Number(seconds);
    return Number.isFinite(n) ? new Date(n * 1000) : null;
  }

  function parseTime(text) {
    if (!text) return null;
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : new Date(ms);
  }

  function timeEl(date) {
    if (!date || Number.isNaN(date.getTime())) return el('span', { class: 'muted' }, '—');
    return el('time', { datetime: date.toISOString(), title: date.toISOString() },
      formatLocal(date));
  }

  function timezoneLabel() {
    const offset = -new Date().getTimezoneOffset();
    const sign = offset >= 0 ? '+' : '-';
    const abs = Math.abs(offset);
    return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  // ---------------------------------------------------------------------------------------
  // Banners
  // ---------------------------------------------------------------------------------------
  function errorText(error) {
    if (error instanceof ApiError) return `${error.type}: ${error.message}`;
    if (error && error.name === 'TypeError') return `NetworkError: ${error.message}`;
    return `Error: ${error && error.message ? error.message : String(error)}`;
  }

  function showError(error) {
    const region = document.getElementById('error');
    const text = typeof error === 'string' ? error : errorText(error);
    for (const line of region.children) if (line.textContent === text) return;
    region.appendChild(el('p', null, text));
  }

  function clearError() {
    document.getElementById('error').replaceChildren();
  }

  function showNotice(text) {
    const region = document.getElementById('notice');
    fill(region, el('p', null, text));
  }

  function clearNotice() {
    document.getElementById('notice').replaceChildren();
  }

  // ---------------------------------------------------------------------------------------
  // The back end
  // ---------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(type, message, status) {
      super(message);
      this.type = type || 'Error';
      this.status = status || 0;
    }
  }

  const SESSION_ENDED = new Set(['NotSignedIn', 'SessionExpired']);

  function headers(extra) {
    const h = { 'X-Keyhaven-Console': '1' };
    if (state.session && state.session.CsrfToken) h['X-CSRF-Token'] = state.session.CsrfToken;
    return Object.assign(h, extra || {});
  }

  // AWS JSON errors may name their type as "namespace#Type".
  function shortType(type) {
    const text = String(type || '');
    const hash = text.lastIndexOf('#');
    return hash >= 0 ? text.slice(hash + 1) : text;
  }

  function jsonError(status, text) {
    try {
      const body = JSON.parse(text);
      if (body && typeof body === 'object') {
        const type = shortType(body.__type || body.code || body.Code);
        const message = body.message || body.Message || '';
        if (type) return new ApiError(type, message, status);
      }
    } catch (_) { /* not JSON */ }
    return null;
  }

  function httpError(status, statusText) {
    return new ApiError('HttpError', `HTTP ${status}${statusText ? ` ${statusText}` : ''}`,
      status);
  }

  // Ends the session on the console's side when the back end says it is gone.
  function checkSessionEnded(error) {
    if (error instanceof ApiError && error.status === 401 && SESSION_ENDED.has(error.type)) {
      sessionEnded(error);
      return true;
    }
    return false;
  }

  async function send(url, init) {
    let response;
    try {
      response = await fetch(url, Object.assign({ credentials: 'same-origin', cache: 'no-store' },
        init));
    } catch (error) {
      throw new ApiError('NetworkError', error && error.message ? error.message : 'no answer');
    }
    const text = await response.text();
    return { response, text };
  }

  async function apiJson(url, init) {
    const { response, text } = await send(url, init);
    if (!response.ok) {
      const error = jsonError(response.status, text) ||
        httpError(response.status, response.statusText);
      checkSessionEnded(error);
      throw error;
    }
    if (!text) return {};
    try {
      return JSON.parse(text);
    } catch (_) {
      throw new ApiError('SerializationException', 'the answer is not JSON', response.status);
    }
  }

  function kms(operation, body) {
    return apiJson('/api/kms', {
      method: 'POST',
      headers: headers({
        'Content-Type': 'application/x-amz-json-1.1',
        'X-Amz-Target': `TrentService.${operation}`,
      }),
      body: JSON.stringify(body || {}),
    });
  }

  // --- IAM over the Query protocol: XML answers ---
  function xmlChildren(node, name) {
    if (!node) return [];
    return Array.from(node.children).filter((c) => c.localName === name);
  }

  function xmlChild(node, name) {
    return xmlChildren(node, name)[0] || null;
  }

  function xmlText(node, name) {
    const child = xmlChild(node, name);
    return child ? child.textContent : '';
  }

  function xmlFind(node, name) {
    return node ? node.getElementsByTagNameNS('*', name)[0] || null : null;
  }

  // The <member> elements of the list named `name` (looked for anywhere under `node`).
  function xmlMembers(node, name) {
    return xmlChildren(xmlFind(node, name), 'member');
  }

  async function iam(action, params) {
    const form = new URLSearchParams();
    form.set('Action', action);
    form.set('Version', '2010-05-08');
    for (const [name, value] of Object.entries(params || {})) form.set(name, value);
    const { response, text } = await send('/api/iam', {
      method: 'POST',
      headers: headers({ 'Content-Type': 'application/x-www-form-urlencoded' }),
      body: form.toString(),
    });
    let doc = null;
    const trimmed = text.trim();
    if (trimmed.startsWith('<')) {
      doc = new DOMParser().parseFromString(trimmed, 'application/xml');
      if (doc.getElementsByTagName('parsererror').length) doc = null;
    }
    if (!response.ok) {
      let error = null;
      const errorNode = doc && xmlFind(doc, 'Error');
      if (errorNode) {
        error = new ApiError(xmlText(errorNode, 'Code') || 'Error',
          xmlText(errorNode, 'Message'), response.status);
      }
      error = error || jsonError(response.status, text) ||
        httpError(response.status, response.statusText);
      checkSessionEnded(error);
      throw error;
    }
    if (!doc) throw new ApiError('SerializationException', 'the answer is not XML', 200);
    return doc.documentElement;
  }

  async function readAudit(lines) {
    const n = Math.max(1, Math.min(10000, Math.floor(Number(lines) || 1000)));
    const body = await apiJson(`/api/audit?lines=${n}`, { method: 'GET', headers: headers() });
    return Array.isArray(body.Records) ? body.Records : [];
  }

  // Runs `task` on every item, at most `limit` at a time; settles every item.
  async function mapLimit(items, limit, task) {
    const results = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const index = next++;
        try {
          results[index] = { ok: true, value: await task(items[index], index) };
        } catch (error) {
          results[index] = { ok: false, error };
        }
      }
    }
    const workers = [];
    for (let i = 0; i < Math.min(limit, items.length); i++) workers.push(worker());
    await Promise.all(workers);
    return results;
  }

  async function listAllKeys() {
    const keys = [];
    let marker = '';
    for (let page = 0; page < 1000; page++) {
      const body = { Limit: 1000 };
      if (marker) body.Marker = marker;
      const answer = await kms('ListKeys', body);
      keys.push(...(answer.Keys || []));
      if (!answer.Truncated || !answer.NextMarker) break;
      marker = answer.NextMarker;
    }
    return keys;
  }

  async function listAllAliases() {
    const aliases = [];
    let marker = '';
    for (let page = 0; page < 1000; page++) {
      const body = { Limit: 1000 };
      if (marker) body.Marker = marker;
      const answer = await kms('ListAliases', body);
      aliases.push(...(answer.Aliases || []));
      if (!answer.Truncated || !answer.NextMarker) break;
      marker = answer.NextMarker;
    }
    const byKey = new Map();
    for (const alias of aliases) {
      if (!alias.TargetKeyId) continue;
      if (!byKey.has(alias.TargetKeyId)) byKey.set(alias.TargetKeyId, []);
      byKey.get(alias.TargetKeyId).push(alias.AliasName);
    }
    for (const names of byKey.values()) names.sort();
    state.aliasesByKey = byKey;
    return byKey;
  }

  // The key id of a key ARN; '' for anything else (an alias ARN, another resource).
  function keyIdOfArn(arn) {
    const match = /:key\/([^/]+)$/.exec(String(arn || ''));
    return match ? match[1] : '';
  }

  // Short name of an audit record's resource: the key's alias when known, else the first 8
  // characters of its id; an alias ARN as "alias/name".
  function keyLabel(arn, full) {
    const text = String(arn || '');
    const id = keyIdOfArn(text);
    if (id) {
      const aliases = state.aliasesByKey.get(id);
      if (aliases && aliases.length) return aliases[0];
      return (full || id.length <= 8) ? id : id.slice(0, 8);
    }
    const alias = /:(alias\/.+)$/.exec(text);
    if (alias) return alias[1];
    return text;
  }

  // A link to the key page for a key ARN of the signed-in account; plain text otherwise.
  function resourceLink(arn) {
    const id = keyIdOfArn(arn);
    const label = keyLabel(arn, true);
    const account = state.session ? state.session.AccountId : '';
    if (id && account && String(arn).includes(`:${account}:key/`)) {
      return el('a', { href: `#/keys/${encodeURIComponent(id)}`, title: arn }, label);
    }
    return el('span', { title: arn }, breakable(label));
  }

  // ---------------------------------------------------------------------------------------
  // Session
  // ---------------------------------------------------------------------------------------
  function setSession(session) {
    if (!session || (state.session && state.session.Arn !== session.Arn)) {
      state.simulator.principal = ''; // prefilled again with the next user's ARN
    }
    state.session = session;
    const nav = document.getElementById('nav');
    window.clearTimeout(state.expiryTimer);
    if (!session) {
      nav.hidden = true;
      document.getElementById('whoami').textContent = '';
      return;
    }
    nav.hidden = false;
    const who = document.getElementById('whoami');
    fill(who,
      el('span', { class: 'mono who-arn' }, session.Arn || session.UserName || ''),
      el('span', { class: 'who-account' }, ` · account ${session.AccountId || '?'}`),
    );
    const expires = fromEpochSeconds(session.Expires);
    if (expires) {
      who.title = `Session expires ${formatLocal(expires)}`;
      const wait = expires.getTime() - Date.now();
      if (wait > 0 && wait < 2 ** 31 - 1) {
        state.expiryTimer = window.setTimeout(() => {
          sessionEnded(new ApiError('SessionExpired', 'the session has expired; sign in again',
            401));
        }, wait + 1000);
      }
    }
  }

  function sessionEnded(error) {
    if (!state.session) return;
    setSession(null);
    state.view++;
    renderSignIn();
    showError(`${error.type}: ${error.message || 'the session ended'} (sign in again)`);
  }

  async function signOut() {
    const button = document.getElementById('sign-out');
    button.disabled = true;
    // The session ends on the daemon, or the page says it did not: the cookie is HttpOnly,
    // so only the daemon can end it. A token gone stale (a sign-in in another tab) is read
    // again once.
    let ended = false;
    let failure = null;
    for (let attempt = 0; attempt < 2 && !ended; attempt++) {
      try {
        const { response, text } = await send('/api/sign-out', { method: 'POST', headers: headers() });
        if (response.ok || response.status === 401) {
          ended = true;
        } else {
          failure = jsonError(response.status, text) || httpError(response.status, response.statusText);
          if (response.status === 403 && attempt === 0) {
            const fresh = await send('/api/session', { method: 'GET', headers: headers() });
            if (fresh.response.ok) setSession(JSON.parse(fresh.text));
          }
        }
      } catch (error) {
        failure = error;
      }
    }
    button.disabled = false;
    if (!ended) {
      const type = (failure && failure.type) || 'NetworkError';
      const message = (failure && failure.message) || 'no answer';
      showError(`${type}: ${message} (the session may still be open; sign out again)`);
      return;
    }
    setSession(null);
    state.view++;
    state.aliasesByKey = new Map();
    clearError();
    renderSignIn();
    showNotice('Signed out.');
  }

  function renderSignIn() {
    clearNotice();
    updateNavCurrent('');
    const account = el('input', {
      id: 'account', name: 'account', required: true, autocomplete: 'organization',
      autocapitalize: 'none', spellcheck: 'false', placeholder: '12-digit account id or name',
    });
    const userName = el('input', {
      id: 'user-name', name: 'user-name', required: true, autocomplete: 'username',
      autocapitalize: 'none', spellcheck: 'false',
    });
    const password = el('input', {
      id: 'password', name: 'password', type: 'password', required: true,
      autocomplete: 'current-password',
    });
    const mfa = el('input', {
      id: 'mfa-code', name: 'mfa-code', inputmode: 'numeric', autocomplete: 'one-time-code',
      maxlength: '8', class: 'short',
    });
    const newPassword = el('input', {
      id: 'new-password', name: 'new-password', type: 'password',
      autocomplete: 'new-password',
    });
    const newPasswordRow = el('div', { class: 'field', id: 'new-password-row', hidden: true },
      el('label', { for: 'new-password' }, 'New password'),
      newPassword,
      el('p', { class: 'hint' },
        'Your password must be changed: choose a new one and sign in again.'));
    const button = el('button', { id: 'sign-in-button', type: 'submit' }, 'Sign in');
    const form = el('form', { id: 'sign-in', class: 'stack', 'aria-labelledby': 'sign-in-title' },
      el('div', { class: 'field' }, el('label', { for: 'account' }, 'Account'), account),
      el('div', { class: 'field' }, el('label', { for: 'user-name' }, 'User name'), userName),
      el('div', { class: 'field' }, el('label', { for: 'password' }, 'Password'), password),
      el('div', { class: 'field' },
        el('label', { for: 'mfa-code' }, 'MFA code ',
          el('span', { class: 'hint' }, '(when your user has an MFA device)')),
        mfa),
      newPasswordRow,
      el('div', { class: 'actions' }, button));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearError();
      clearNotice();
      button.disabled = true;
      button.textContent = 'Signing in…';
      const body = {
        Account: account.value.trim(),
        UserName: userName.value.trim(),
        Password: password.value,
        MfaCode: mfa.value.trim(),
        NewPassword: newPasswordRow.hidden ? '' : newPassword.value,
      };
      try {
        const session = await apiJson('/api/sign-in', {
          method: 'POST',
          headers: { 'X-Keyhaven-Console': '1', 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        });
        password.value = '';
        newPassword.value = '';
        setSession(session);
        if (!location.hash || location.hash === '#' || location.hash === '#/') {
          location.replace('#/keys'); // the hashchange routes
        } else {
          route();
        }
        return;
      } catch (error) {
        showError(error);
        if (error instanceof ApiError) {
          if (error.type === 'AccessDeniedException' && /MFA/i.test(error.message)) {
            mfa.focus();
          } else if (error.type === 'PasswordResetRequiredException') {
            newPasswordRow.hidden = false;
            newPassword.required = true;
            newPassword.focus();
          } else if (error.type === 'PasswordPolicyViolationException' && !newPasswordRow.hidden) {
            newPassword.focus();
          } else if (error.type === 'SignInFailedException') {
            password.value = '';
            password.focus();
          }
        }
      } finally {
        button.disabled = false;
        button.textContent = 'Sign in';
      }
    });

    setMain(el('section', { class: 'sign-in-card' },
      el('h2', { id: 'sign-in-title' }, 'Sign in'),
      el('p', { class: 'muted' }, 'Sign in with your account, IAM user name and password.'),
      form));
    account.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Routing
  // ---------------------------------------------------------------------------------------
  function updateNavCurrent(section) {
    for (const name of ['keys', 'create', 'identities', 'simulator', 'audit']) {
      const link = document.getElementById(`nav-${name}`);
      if (name === section) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  function parseHash() {
    const hash = location.hash || '';
    const path = hash.startsWith('#/') ? hash.slice(2) : '';
    const parts = path.split('/').filter((p) => p !== '');
    return parts.map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (_) {
        return p;
      }
    });
  }

  function route() {
    state.view++;
    const view = state.view;
    clearError();
    clearNotice();
    if (state.pendingNotice) {
      showNotice(state.pendingNotice);
      state.pendingNotice = '';
    }
    if (state.pendingError) {
      showError(state.pendingError);
      state.pendingError = '';
    }
    if (!state.session) {
      renderSignIn();
      return;
    }
    const parts = parseHash();
    const [section] = parts;
    if (!section) {
      location.replace('#/keys');
      return;
    }
    updateNavCurrent(section);
    const current = () => view === state.view && state.session !== null;
    const pages = window.Keyhaven; // the page scripts after this one add their render functions
    switch (section) {
      case 'keys':
        if (parts.length > 1) pages.renderKeyPage(parts.slice(1).join('/'), current);
        else pages.renderKeys(current);
        break;
      case 'create':
        pages.renderCreate(current);
        break;
      case 'identities':
        if (parts.length >= 3 && ['user', 'group', 'role'].includes(parts[1])) {
          pages.renderEntity(parts[1], parts.slice(2).join('/'), current);
        } else {
          pages.renderIdentities(current);
        }
        break;
      case 'simulator':
        pages.renderSimulator(current);
        break;
      case 'audit':
        pages.renderAudit(current);
        break;
      default:
        setMain(el('h2', null, 'Not found'),
          el('p', null, 'There is no such page. ', el('a', { href: '#/keys' }, 'Keys')));
    }
  }

  function navigate(hash, notice, error) {
    state.pendingNotice = notice || '';
    state.pendingError = error || '';
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------
  async function start() {
    document.getElementById('sign-out').addEventListener('click', signOut);
    const skip = document.querySelector('.skip-link');
    if (skip) {
      skip.addEventListener('click', (event) => {
        event.preventDefault();
        main().focus();
      });
    }
    window.addEventListener('hashchange', route);
    let failure = null;
    try {
      const session = await apiJson('/api/session', { method: 'GET', headers: headers() });
      setSession(session);
    } catch (error) {
      setSession(null);
      if (!(error instanceof ApiError && error.status === 401)) failure = error;
    }
    route();
    if (failure) showError(failure);
  }

  Object.assign(window.Keyhaven, {
    state, CONCURRENCY,
    append, el, main, fill, setMain, breakable, loading, tableWrap, badge, stateBadge, decisionBadge,
    keyLink, field, prettyJson,
    formatLocal, fromEpochSeconds, parseTime, timeEl, timezoneLabel,
    errorText, showError, clearError, showNotice, clearNotice,
    ApiError, kms, iam, xmlChildren, xmlChild, xmlText, xmlFind, xmlMembers, readAudit, mapLimit,
    listAllKeys, listAllAliases, keyIdOfArn, keyLabel, resourceLink,
    route, navigate,
  });

  // Deferred scripts all run before DOMContentLoaded: by then every page is defined.
  document.addEventListener('DOMContentLoaded', start);
})();
