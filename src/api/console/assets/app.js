// Keyhaven web console: one page, hash routing, talking only to its own origin's /api/*.
// Every string from the server (descriptions, tags, names, policies, audit fields) is
// treated as untrusted: it reaches the page through textContent and attributes only.
'use strict';

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

  const KEY_STATES = ['Enabled', 'Disabled', 'PendingDeletion', 'PendingImport', 'Unavailable'];
  const KEY_SPECS = [
    'SYMMETRIC_DEFAULT', 'HMAC_224', 'HMAC_256', 'HMAC_384', 'HMAC_512',
    'RSA_2048', 'RSA_3072', 'RSA_4096',
    'ECC_NIST_P256', 'ECC_NIST_P384', 'ECC_NIST_P521', 'ECC_SECG_P256K1',
  ];
  const KEY_USAGES = ['ENCRYPT_DECRYPT', 'SIGN_VERIFY', 'GENERATE_VERIFY_MAC', 'KEY_AGREEMENT'];
  const CONCURRENCY = 8;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Okabe–Ito-like palette, distinguishable for most colour-blind readers; the last is "other".
  const SERIES_COLOURS = [
    '#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#7b61c4', '#b8a400',
    '#8c8c8c',
  ];

  function usagesForSpec(spec) {
    if (spec === 'SYMMETRIC_DEFAULT') return ['ENCRYPT_DECRYPT'];
    if (spec.startsWith('HMAC_')) return ['GENERATE_VERIFY_MAC'];
    if (spec.startsWith('RSA_')) return ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'];
    if (spec === 'ECC_SECG_P256K1') return ['SIGN_VERIFY'];
    if (spec.startsWith('ECC_NIST_')) return ['SIGN_VERIFY', 'KEY_AGREEMENT'];
    return KEY_USAGES.slice();
  }

  // ---------------------------------------------------------------------------------------
  // DOM helpers (no innerHTML anywhere)
  // ---------------------------------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);

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

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === undefined || value === null) continue;
        if (name === 'text') node.textContent = value;
        else node.setAttribute(name, String(value));
      }
    }
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
    try {
      await send('/api/sign-out', { method: 'POST', headers: headers() });
    } catch (_) { /* signed out locally either way */ }
    button.disabled = false;
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
    switch (section) {
      case 'keys':
        if (parts.length > 1) renderKeyPage(parts.slice(1).join('/'), current);
        else renderKeys(current);
        break;
      case 'create':
        renderCreate(current);
        break;
      case 'identities':
        if (parts.length >= 3 && ['user', 'group', 'role'].includes(parts[1])) {
          renderEntity(parts[1], parts.slice(2).join('/'), current);
        } else {
          renderIdentities(current);
        }
        break;
      case 'simulator':
        renderSimulator(current);
        break;
      case 'audit':
        renderAudit(current);
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
  // Keys list
  // ---------------------------------------------------------------------------------------
  async function renderKeys(current) {
    setMain(el('h2', null, 'Keys'), loading());
    let ids;
    try {
      ids = await listAllKeys();
    } catch (error) {
      if (!current()) return;
      showError(error);
      setMain(el('h2', null, 'Keys'), el('p', { class: 'muted' }, 'The keys could not be listed.'));
      return;
    }
    if (!current()) return;
    try {
      await listAllAliases();
    } catch (error) {
      if (!current()) return;
      showError(error);
    }
    if (!current()) return;
    const progress = loading(`Loading… 0 of ${ids.length} keys`);
    setMain(el('h2', null, 'Keys'), progress);
    let done = 0;
    const rows = await mapLimit(ids, CONCURRENCY, async (entry) => {
      const [described, tagged] = await Promise.allSettled([
        kms('DescribeKey', { KeyId: entry.KeyId }),
        kms('ListResourceTags', { KeyId: entry.KeyId }),
      ]);
      done++;
      if (current()) progress.textContent = `Loading… ${done} of ${ids.length} keys`;
      return {
        id: entry.KeyId,
        arn: entry.KeyArn,
        meta: described.status === 'fulfilled' ? described.value.KeyMetadata || {} : null,
        tags: tagged.status === 'fulfilled' ? tagged.value.Tags || [] : [],
        errors: [described, tagged].filter((r) => r.status === 'rejected').map((r) => r.reason),
      };
    });
    if (!current()) return;
    const keys = rows.map((r) => r.value);
    const errors = keys.flatMap((k) => k.errors);
    if (errors.length) {
      showError(`${errors.length} call(s) for single keys failed; first: ${errorText(errors[0])}`);
    }
    for (const key of keys) {
      key.aliases = state.aliasesByKey.get(key.id) || [];
      if (key.meta && key.meta.Keystore) state.keystoresSeen.add(key.meta.Keystore);
    }
    drawKeysPage(keys);
  }

  function keyState(key) {
    return key.meta ? key.meta.KeyState || '' : '';
  }

  function sortValue(key, column) {
    const m = key.meta || {};
    switch (column) {
      case 'alias': return key.aliases.length ? key.aliases[0].toLowerCase() : '\uffff';
      case 'id': return key.id;
      case 'state': return keyState(key);
      case 'spec': return m.KeySpec || '';
      case 'keystore': return m.Keystore || '';
      case 'created': return Number(m.CreationDate) || 0;
      default: return '';
    }
  }

  function tagMatches(key, filter) {
    const text = filter.trim();
    if (!text) return true;
    const eq = text.indexOf('=');
    const name = eq >= 0 ? text.slice(0, eq).trim() : text;
    const value = eq >= 0 ? text.slice(eq + 1).trim() : null;
    return key.tags.some((t) => t.TagKey === name && (value === null || t.TagValue === value));
  }

  function keyMatches(key, f) {
    if (f.state && keyState(key) !== f.state) return false;
    if (f.keystore && (key.meta ? key.meta.Keystore : '') !== f.keystore) return false;
    const needle = f.alias.trim().toLowerCase();
    if (needle && !key.id.toLowerCase().includes(needle) &&
      !key.aliases.some((a) => a.toLowerCase().includes(needle))) return false;
    return tagMatches(key, f.tag);
  }

  function drawKeysPage(keys) {
    const f = state.keysFilter;
    const stateSelect = el('select', { id: 'filter-state' },
      el('option', { value: '' }, 'All'),
      KEY_STATES.map((s) => el('option', { value: s }, s)));
    stateSelect.value = f.state;
    const aliasInput = el('input', {
      id: 'filter-alias', type: 'search', value: f.alias, placeholder: 'alias or key id',
      autocomplete: 'off', spellcheck: 'false',
    });
    const tagInput = el('input', {
      id: 'filter-tag', type: 'search', value: f.tag, placeholder: 'key or key=value',
      autocomplete: 'off', spellcheck: 'false',
    });
    const keystoreSelect = el('select', { id: 'filter-keystore' },
      el('option', { value: '' }, 'All'),
      Array.from(state.keystoresSeen).sort().map((k) => el('option', { value: k }, k)));
    keystoreSelect.value = state.keystoresSeen.has(f.keystore) ? f.keystore : '';
    f.keystore = keystoreSelect.value;

    const count = el('p', { id: 'keys-count', class: 'count', 'aria-live': 'polite' });
    const tbody = el('tbody');
    const sortable = {
      alias: 'Aliases', id: 'Key ID', state: 'State', spec: 'Key spec', keystore: 'Keystore',
      created: 'Created',
    };
    const headerCells = [];
    const th = (column, label) => {
      if (!column) return el('th', { scope: 'col' }, label);
      const button = el('button', { type: 'button', class: 'sort', dataset: { sort: column } },
        label, el('span', { class: 'sort-mark', 'aria-hidden': 'true' }));
      const cell = el('th', { scope: 'col', 'aria-sort': 'none' }, button);
      headerCells.push(cell);
      button.addEventListener('click', () => {
        const s = state.keysSort;
        if (s.column === column) {
          s.direction = s.direction === 'ascending' ? 'descending' : 'ascending';
        } else {
          s.column = column;
          s.direction = 'ascending';
        }
        redraw();
      });
      return cell;
    };
    const table = el('table', { id: 'keys-table', class: 'data' },
      el('caption', { class: 'visually-hidden' }, 'Keys of the account'),
      el('thead', null, el('tr', null,
        th('alias', sortable.alias), th('id', sortable.id), th('state', sortable.state),
        th('spec', sortable.spec), th('', 'Usage'), th('keystore', sortable.keystore),
        th('created', sortable.created), th('', 'Description'))),
      tbody);

    function redraw() {
      const s = state.keysSort;
      for (const cell of headerCells) {
        const column = cell.querySelector('button').dataset.sort;
        const active = column === s.column;
        cell.setAttribute('aria-sort', active ? s.direction : 'none');
        cell.querySelector('.sort-mark').textContent =
          active ? (s.direction === 'ascending' ? ' ▲' : ' ▼') : '';
      }
      let shown = keys.filter((k) => keyMatches(k, f));
      if (s.column) {
        const sign = s.direction === 'ascending' ? 1 : -1;
        shown = shown.slice().sort((a, b) => {
          const x = sortValue(a, s.column);
          const y = sortValue(b, s.column);
          const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
          return c !== 0 ? sign * c : a.id.localeCompare(b.id);
        });
      }
      fill(tbody, ...shown.map(keyRow));
      if (!shown.length) {
        tbody.appendChild(el('tr', { class: 'empty' },
          el('td', { colspan: '8' }, keys.length ? 'No key matches the filters.' : 'No keys yet.')));
      }
      count.textContent = `${shown.length} of ${keys.length} keys`;
    }

    stateSelect.addEventListener('change', () => { f.state = stateSelect.value; redraw(); });
    keystoreSelect.addEventListener('change', () => { f.keystore = keystoreSelect.value; redraw(); });
    aliasInput.addEventListener('input', () => { f.alias = aliasInput.value; redraw(); });
    tagInput.addEventListener('input', () => { f.tag = tagInput.value; redraw(); });

    const filters = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter keys' },
      field('filter-state', 'State', stateSelect),
      field('filter-alias', 'Alias or id', aliasInput),
      field('filter-tag', 'Tag', tagInput),
      field('filter-keystore', 'Keystore', keystoreSelect));
    filters.addEventListener('submit', (event) => event.preventDefault());

    const refresh = el('button', { type: 'button', id: 'keys-refresh', class: 'secondary' },
      'Refresh');
    refresh.addEventListener('click', () => route());

    setMain(
      el('div', { class: 'page-head' }, el('h2', null, 'Keys'),
        el('div', { class: 'head-actions' }, refresh,
          el('a', { href: '#/create', class: 'button-link' }, 'Create key'))),
      filters, count, tableWrap(table));
    redraw();
  }

  function field(id, label, control, hint, extraClass) {
    return el('div', { class: extraClass ? `field ${extraClass}` : 'field' },
      el('label', { for: id }, label), control,
      hint ? el('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
  }

  function keyRow(key) {
    const m = key.meta || {};
    const shownState = keyState(key);
    return el('tr', { dataset: { keyId: key.id, state: shownState } },
      el('td', null, key.aliases.length
        ? key.aliases.map((a, i) => [i ? el('br') : null, el('span', { class: 'mono' }, a)])
        : el('span', { class: 'muted' }, '—')),
      el('td', null, keyLink(key.id)),
      el('td', null, key.meta ? stateBadge(shownState) : badge('unknown', 'neutral')),
      el('td', { class: 'mono' }, m.KeySpec || ''),
      el('td', { class: 'mono' }, m.KeyUsage || ''),
      el('td', { class: 'mono' }, m.Keystore || ''),
      el('td', { class: 'nowrap' }, timeEl(fromEpochSeconds(m.CreationDate))),
      el('td', { class: 'description' }, m.Description || ''));
  }

  // ---------------------------------------------------------------------------------------
  // Create key
  // ---------------------------------------------------------------------------------------
  function renderCreate(current) {
    const description = el('input', { id: 'create-description', maxlength: '8192',
      autocomplete: 'off' });
    const spec = el('select', { id: 'create-spec' },
      KEY_SPECS.map((s) => el('option', { value: s }, s)));
    const usage = el('select', { id: 'create-usage' });
    const keystore = el('input', { id: 'create-keystore', placeholder: 'sealed',
      list: 'keystore-choices', autocomplete: 'off', spellcheck: 'false' });
    const keystoreChoices = el('datalist', { id: 'keystore-choices' },
      Array.from(state.keystoresSeen).sort().map((k) => el('option', { value: k })));
    const alias = el('input', { id: 'create-alias', placeholder: 'alias/my-app',
      autocomplete: 'off', spellcheck: 'false' });
    const tags = el('textarea', { id: 'create-tags', rows: '4', spellcheck: 'false',
      placeholder: 'team=payments\nenvironment=production' });
    const submit = el('button', { id: 'create-submit', type: 'submit' }, 'Create key');

    function fillUsages() {
      const allowed = usagesForSpec(spec.value);
      const previous = usage.value;
      fill(usage, ...allowed.map((u) => el('option', { value: u }, u)));
      usage.value = allowed.includes(previous) ? previous : allowed[0];
      usage.disabled = false;
    }
    spec.addEventListener('change', fillUsages);
    fillUsages();

    const form = el('form', { id: 'create-key', class: 'stack wide' },
      field('create-description', 'Description', description),
      el('div', { class: 'row' },
        field('create-spec', 'Key spec', spec),
        field('create-usage', 'Key usage', usage)),
      field('create-keystore', 'Keystore (optional)', keystore,
        'Empty: the daemon’s default keystore. "sealed" or a PKCS#11 keystore, e.g. "pkcs11:default".'),
      keystoreChoices,
      field('create-alias', 'Alias (optional)', alias, 'With or without the "alias/" prefix.'),
      field('create-tags', 'Tags (optional)', tags, 'One key=value per line.'),
      el('div', { class: 'actions' }, submit));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearError();
      clearNotice();
      const parsedTags = [];
      const lines = tags.value.split('\n');
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i].trim();
        if (!line) continue;
        const eq = line.indexOf('=');
        const tagKey = (eq >= 0 ? line.slice(0, eq) : line).trim();
        const tagValue = eq >= 0 ? line.slice(eq + 1).trim() : '';
        if (!tagKey) {
          showError(`ValidationException: tag line ${i + 1} has no key (write key=value)`);
          tags.focus();
          return;
        }
        parsedTags.push({ TagKey: tagKey, TagValue: tagValue });
      }
      let aliasName = alias.value.trim();
      if (aliasName && !aliasName.startsWith('alias/')) aliasName = `alias/${aliasName}`;
      const body = {
        Description: description.value,
        KeySpec: spec.value,
        KeyUsage: usage.value,
      };
      if (parsedTags.length) body.Tags = parsedTags;
      if (keystore.value.trim()) body.Keystore = keystore.value.trim();
      submit.disabled = true;
      submit.textContent = 'Creating…';
      let meta;
      try {
        meta = (await kms('CreateKey', body)).KeyMetadata || {};
      } catch (error) {
        if (current()) showError(error);
        submit.disabled = false;
        submit.textContent = 'Create key';
        return;
      }
      let aliasError = null;
      if (aliasName) {
        try {
          await kms('CreateAlias', { AliasName: aliasName, TargetKeyId: meta.KeyId });
        } catch (error) {
          aliasError = error;
        }
      }
      if (meta.Keystore) state.keystoresSeen.add(meta.Keystore);
      const notice = aliasName && !aliasError
        ? `Key ${meta.KeyId} created with alias ${aliasName}.`
        : `Key ${meta.KeyId} created.`;
      navigate(`#/keys/${encodeURIComponent(meta.KeyId)}`, notice, aliasError
        ? `The key was made but the alias was refused: ${errorText(aliasError)}` : '');
    });

    setMain(el('h2', null, 'Create a key'), form);
    description.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Key page
  // ---------------------------------------------------------------------------------------
  async function renderKeyPage(keyName, current) {
    setMain(el('h2', { id: 'key-title' }, keyName), loading());
    let meta;
    try {
      meta = (await kms('DescribeKey', { KeyId: keyName })).KeyMetadata || {};
    } catch (error) {
      if (!current()) return;
      showError(error);
      setMain(el('h2', { id: 'key-title' }, keyName),
        el('p', { class: 'muted' }, 'The key could not be described. ',
          el('a', { href: '#/keys' }, 'Back to the keys')));
      return;
    }
    if (!current()) return;
    const page = {
      meta,
      aliases: [],
      current,
      title: el('h2', { id: 'key-title', class: 'break' }, meta.KeyId),
      summary: el('section', { class: 'card', 'aria-labelledby': 'key-summary-title' }),
      aliasesSection: el('section', { class: 'card', 'aria-labelledby': 'key-aliases-title' },
        el('h3', { id: 'key-aliases-title' }, 'Aliases and tags'), loading()),
      rotationSection: el('section', { class: 'card', 'aria-labelledby': 'key-rotation-title' },
        el('h3', { id: 'key-rotation-title' }, 'Rotation and versions'), loading()),
      policySection: el('section', { class: 'card', 'aria-labelledby': 'key-policy-title' },
        el('h3', { id: 'key-policy-title' }, 'Key policy'), loading()),
      usageSection: el('section', { class: 'card', 'aria-labelledby': 'key-usage-title' },
        el('h3', { id: 'key-usage-title' }, 'Calls in the last 24 hours'), loading()),
      dialog: null,
    };
    setMain(
      el('p', { class: 'crumbs' }, el('a', { href: '#/keys' }, 'Keys'), ' / '),
      page.title, page.summary, page.aliasesSection, page.rotationSection, page.policySection,
      page.usageSection);
    drawKeySummary(page);
    loadAliasesAndTags(page);
    loadRotation(page);
    loadPolicy(page);
    loadKeyUsage(page);
  }

  async function reloadKey(page, notice) {
    try {
      page.meta = (await kms('DescribeKey', { KeyId: page.meta.KeyId })).KeyMetadata || page.meta;
    } catch (error) {
      if (page.current()) showError(error);
      return;
    }
    if (!page.current()) return;
    drawKeySummary(page);
    loadRotation(page);
    if (notice) showNotice(notice);
  }

  function lastUsedText(meta) {
    const when = fromEpochSeconds(meta.LastUsedDate);
    if (!when) return 'never';
    return `${formatLocal(when)}${meta.LastUsedOperation ? ` (${meta.LastUsedOperation})` : ''}`;
  }

  function drawKeySummary(page) {
    const m = page.meta;
    const rows = [];
    const item = (label, name, value, props) => {
      rows.push(el('dt', null, label));
      rows.push(el('dd', Object.assign({ dataset: { field: name } }, props || {}), value));
    };
    item('Key ID', 'KeyId', el('span', { class: 'mono break' }, m.KeyId || ''));
    item('ARN', 'Arn', el('span', { class: 'mono break' }, breakable(m.Arn)));
    item('State', 'KeyState', stateBadge(m.KeyState, 'key-state'));
    item('Description', 'Description', m.Description
      ? el('span', { class: 'pre-line' }, m.Description) : el('span', { class: 'muted' }, '—'));
    item('Key spec', 'KeySpec', el('span', { class: 'mono' }, m.KeySpec || ''));
    item('Key usage', 'KeyUsage', el('span', { class: 'mono' }, m.KeyUsage || ''));
    item('Keystore', 'Keystore', el('span', { class: 'mono' }, m.Keystore || ''));
    item('Origin', 'Origin', el('span', { class: 'mono' }, m.Origin || ''));
    item('Created', 'CreationDate', timeEl(fromEpochSeconds(m.CreationDate)));
    if (m.DeletionDate !== undefined && m.DeletionDate !== null) {
      item('Deletion date', 'DeletionDate', timeEl(fromEpochSeconds(m.DeletionDate)));
    }
    if (m.PendingDeletionWindowInDays !== undefined && m.PendingDeletionWindowInDays !== null) {
      item('Deletion window', 'PendingDeletionWindowInDays',
        `${m.PendingDeletionWindowInDays} days`);
    }
    item('Current version', 'CurrentKeyVersion', String(m.CurrentKeyVersion ?? ''));
    item('Last used', 'LastUsedDate', lastUsedText(m), { id: 'key-last-used' });
    for (const [label, name] of [
      ['Encryption algorithms', 'EncryptionAlgorithms'], ['Signing algorithms', 'SigningAlgorithms'],
      ['MAC algorithms', 'MacAlgorithms'], ['Key agreement algorithms', 'KeyAgreementAlgorithms'],
    ]) {
      if (Array.isArray(m[name]) && m[name].length) {
        item(label, name, el('span', { class: 'mono' }, m[name].join(', ')));
      }
    }
    if (m.ValidTo !== undefined && m.ValidTo !== null) {
      item('Material valid to', 'ValidTo', timeEl(fromEpochSeconds(m.ValidTo)));
    }

    const actions = el('div', { class: 'actions', id: 'key-actions' });
    const act = (id, label, operation, noticeText, kind) => {
      const button = el('button', { id, type: 'button', class: kind || 'secondary' }, label);
      button.addEventListener('click', async () => {
        clearError();
        button.disabled = true;
        try {
          await kms(operation, { KeyId: m.KeyId });
        } catch (error) {
          if (page.current()) showError(error);
          button.disabled = false;
          return;
        }
        await reloadKey(page, noticeText);
      });
      actions.appendChild(button);
    };
    if (m.KeyState === 'Disabled') act('enable-key', 'Enable', 'EnableKey', 'Key enabled.');
    if (m.KeyState === 'Enabled') act('disable-key', 'Disable', 'DisableKey', 'Key disabled.');
    if (m.KeyState === 'PendingDeletion') {
      act('cancel-deletion', 'Cancel deletion', 'CancelKeyDeletion',
        'Deletion cancelled; the key is Disabled until you enable it.');
    }
    if (m.KeyState === 'Enabled' || m.KeyState === 'Disabled') {
      const schedule = el('button', { id: 'schedule-deletion', type: 'button', class: 'danger' },
        'Schedule deletion…');
      schedule.addEventListener('click', () => openDeletionDialog(page, schedule));
      actions.appendChild(schedule);
    }

    page.title.textContent = page.aliases.length ? page.aliases[0] : m.KeyId;
    fill(page.summary,
      el('h3', { id: 'key-summary-title' }, 'Key'),
      el('dl', { id: 'key-metadata', class: 'meta' }, rows),
      actions.children.length ? actions : null);
  }

  function openDeletionDialog(page, opener) {
    const m = page.meta;
    if (page.dialog) page.dialog.remove();
    const windowInput = el('input', { id: 'deletion-window', type: 'number', min: '7',
      max: '30', step: '1', value: '30', required: true, class: 'short' });
    const confirmInput = el('input', { id: 'deletion-confirm', autocomplete: 'off',
      spellcheck: 'false', class: 'mono', 'aria-describedby': 'deletion-confirm-hint' });
    const submit = el('button', { id: 'deletion-submit', type: 'submit', class: 'danger',
      disabled: true }, 'Schedule deletion');
    const cancel = el('button', { id: 'deletion-cancel', type: 'button', class: 'secondary' },
      'Cancel');
    const dateLine = el('p', { id: 'deletion-date' });
    const dialogError = el('p', { class: 'inline-error', role: 'alert', id: 'deletion-error' });
    const updateDate = () => {
      const days = Number(windowInput.value);
      if (Number.isInteger(days) && days >= 7 && days <= 30) {
        const when = new Date(Date.now() + days * 86400000);
        dateLine.textContent = `The material will be destroyed on or after ${formatLocal(when, false)}.`;
      } else {
        dateLine.textContent = 'The window is 7 to 30 days.';
      }
    };
    const updateSubmit = () => {
      const days = Number(windowInput.value);
      submit.disabled = !(confirmInput.value === m.KeyId && Number.isInteger(days) &&
        days >= 7 && days <= 30);
    };
    windowInput.addEventListener('input', () => { updateDate(); updateSubmit(); });
    confirmInput.addEventListener('input', updateSubmit);

    const form = el('form', { method: 'dialog', class: 'stack' },
      el('h3', { id: 'deletion-title' }, 'Schedule the deletion of this key'),
      el('p', null, 'After the waiting period the key material is destroyed for good. ',
        el('strong', null, 'Everything encrypted under this key becomes unreadable'),
        ', and signatures or MACs made with it can no longer be verified with it. ' +
        'Until then the key cannot be used, and the deletion can be cancelled.'),
      el('p', null, 'Last used: ', el('strong', { id: 'deletion-last-used' }, lastUsedText(m)),
        '.'),
      field('deletion-window', 'Waiting period (days, 7–30)', windowInput),
      dateLine,
      el('div', { class: 'field' },
        el('label', { for: 'deletion-confirm' }, 'Type the key id to confirm'),
        el('p', { class: 'hint mono break', id: 'deletion-confirm-hint' }, m.KeyId),
        confirmInput),
      dialogError,
      el('div', { class: 'actions' }, submit, cancel));
    const dialog = el('dialog', { id: 'deletion-dialog', 'aria-labelledby': 'deletion-title' },
      form);
    page.dialog = dialog;
    main().appendChild(dialog);
    updateDate();

    const close = () => {
      if (dialog.open) dialog.close();
      dialog.remove();
      if (page.dialog === dialog) page.dialog = null;
      if (opener && opener.isConnected) opener.focus();
    };
    cancel.addEventListener('click', close);
    dialog.addEventListener('cancel', (event) => { event.preventDefault(); close(); });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (confirmInput.value !== m.KeyId) return;
      submit.disabled = true;
      dialogError.textContent = '';
      let answer;
      try {
        answer = await kms('ScheduleKeyDeletion', {
          KeyId: m.KeyId, PendingWindowInDays: Number(windowInput.value),
        });
      } catch (error) {
        if (!page.current()) return;
        dialogError.textContent = errorText(error);
        showError(error);
        updateSubmit();
        return;
      }
      close();
      const when = fromEpochSeconds(answer.DeletionDate);
      await reloadKey(page, `Key scheduled for deletion${when ? ` on ${formatLocal(when)}` : ''}.`);
    });
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
    windowInput.focus();
  }

  async function loadAliasesAndTags(page) {
    const m = page.meta;
    const [aliasAnswer, tagAnswer] = await Promise.allSettled([
      kms('ListAliases', { KeyId: m.KeyId, Limit: 1000 }),
      kms('ListResourceTags', { KeyId: m.KeyId }),
    ]);
    if (!page.current()) return;
    const list = el('ul', { id: 'key-aliases', class: 'plain' });
    if (aliasAnswer.status === 'fulfilled') {
      page.aliases = (aliasAnswer.value.Aliases || []).map((a) => a.AliasName).sort();
      for (const name of page.aliases) list.appendChild(el('li', { class: 'mono' }, name));
      page.title.textContent = page.aliases.length ? page.aliases[0] : m.KeyId;
    } else {
      showError(aliasAnswer.reason);
    }
    const tbody = el('tbody');
    let tags = [];
    if (tagAnswer.status === 'fulfilled') {
      tags = tagAnswer.value.Tags || [];
      for (const t of tags) {
        tbody.appendChild(el('tr', null, el('td', { class: 'mono' }, t.TagKey),
          el('td', { class: 'mono' }, t.TagValue)));
      }
    } else {
      showError(tagAnswer.reason);
    }
    fill(page.aliasesSection,
      el('h3', { id: 'key-aliases-title' }, 'Aliases and tags'),
      el('h4', null, 'Aliases'),
      list,
      aliasAnswer.status === 'fulfilled' && !page.aliases.length
        ? el('p', { class: 'muted' }, 'No alias.') : null,
      el('h4', null, 'Tags'),
      tableWrap(el('table', { id: 'key-tags', class: 'data compact' },
        el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Key'),
          el('th', { scope: 'col' }, 'Value'))),
        tbody)),
      tagAnswer.status === 'fulfilled' && !tags.length ? el('p', { class: 'muted' }, 'No tags.')
        : null);
  }

  async function loadRotation(page) {
    const m = page.meta;
    const section = page.rotationSection;
    const heading = el('h3', { id: 'key-rotation-title' }, 'Rotation and versions');
    const rotates = m.KeySpec === 'SYMMETRIC_DEFAULT' || !m.KeySpec;
    const status = el('strong', { id: 'rotation-status' });
    const versionsBody = el('tbody');
    const versionsTable = tableWrap(el('table', { id: 'key-versions', class: 'data compact' },
      el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Version'),
        el('th', { scope: 'col' }, 'Made'), el('th', { scope: 'col' }, 'How'),
        el('th', { scope: 'col' }, ''))),
      versionsBody));
    const currentVersion = Number(m.CurrentKeyVersion) || 0;
    const versionRow = (version, date, type) => el('tr', {
      dataset: { version: String(version) }, class: version === currentVersion ? 'current' : null,
    },
    el('td', null, String(version)), el('td', null, timeEl(date)),
    el('td', { class: 'mono' }, type || ''),
    el('td', null, version === currentVersion ? badge('current', 'info') : ''));

    if (!rotates) {
      status.textContent = `not applicable (${m.KeySpec} keys do not rotate; only SYMMETRIC_DEFAULT keys do)`;
      if (currentVersion) {
        versionsBody.appendChild(versionRow(currentVersion, fromEpochSeconds(m.CreationDate),
          ''));
      }
      fill(section, heading, el('p', null, 'Automatic rotation: ', status),
        el('h4', null, 'Versions'), versionsTable);
      return;
    }
    fill(section, heading, loading());
    const [statusAnswer, rotationsAnswer] = await Promise.allSettled([
      kms('GetKeyRotationStatus', { KeyId: m.KeyId }),
      kms('ListKeyRotations', { KeyId: m.KeyId }),
    ]);
    if (!page.current()) return;
    let enabled = null;
    const next = el('p', { class: 'muted', id: 'rotation-next' });
    if (statusAnswer.status === 'fulfilled') {
      const s = statusAnswer.value;
      enabled = !!s.KeyRotationEnabled;
      status.textContent = enabled
        ? `on, every ${s.RotationPeriodInDays ?? 365} days` : 'off';
      const nextDate = fromEpochSeconds(s.NextRotationDate);
      if (enabled && nextDate) next.textContent = `Next automatic rotation: ${formatLocal(nextDate)}`;
    } else {
      status.textContent = 'unknown';
      showError(statusAnswer.reason);
    }
    if (rotationsAnswer.status === 'fulfilled') {
      const rotations = (rotationsAnswer.value.Rotations || []).slice()
        .sort((a, b) => (Number(b.KeyVersion) || 0) - (Number(a.KeyVersion) || 0));
      for (const r of rotations) {
        versionsBody.appendChild(versionRow(Number(r.KeyVersion) || 0,
          fromEpochSeconds(r.RotationDate), r.RotationType));
      }
      if (!rotations.length && currentVersion) {
        versionsBody.appendChild(versionRow(currentVersion, fromEpochSeconds(m.CreationDate), ''));
      }
    } else {
      showError(rotationsAnswer.reason);
    }

    const controls = el('div', { class: 'actions' });
    const period = el('input', { id: 'rotation-period', type: 'number', min: '90', max: '2560',
      step: '1', placeholder: '365', class: 'short' });
    const run = async (button, operation, body, noticeText) => {
      clearError();
      button.disabled = true;
      try {
        await kms(operation, Object.assign({ KeyId: m.KeyId }, body || {}));
      } catch (error) {
        if (page.current()) showError(error);
        button.disabled = false;
        return;
      }
      await reloadKey(page, noticeText);
    };
    if (enabled !== true) {
      const enable = el('button', { id: 'enable-rotation', type: 'button', class: 'secondary' },
        'Turn on automatic rotation');
      enable.addEventListener('click', () => {
        const days = period.value.trim();
        const body = days ? { RotationPeriodInDays: Number(days) } : {};
        run(enable, 'EnableKeyRotation', body, 'Automatic rotation turned on.');
      });
      controls.append(el('label', { for: 'rotation-period', class: 'inline-label' },
        'Period (days, 90–2560)'), period, enable);
    }
    if (enabled !== false) {
      const disable = el('button', { id: 'disable-rotation', type: 'button', class: 'secondary' },
        'Turn off automatic rotation');
      disable.addEventListener('click', () => run(disable, 'DisableKeyRotation', null,
        'Automatic rotation turned off.'));
      controls.append(disable);
    }
    const rotate = el('button', { id: 'rotate-now', type: 'button', class: 'secondary' },
      'Rotate now');
    rotate.addEventListener('click', () => run(rotate, 'RotateKeyOnDemand', null,
      'Key rotated: new encryptions use the new version.'));
    controls.append(rotate);
    fill(section, heading, el('p', null, 'Automatic rotation: ', status), next,
      controls, el('h4', null, 'Versions'), versionsTable);
  }

  function prettyJson(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return text;
    }
  }

  async function loadPolicy(page) {
    const m = page.meta;
    const section = page.policySection;
    const heading = el('h3', { id: 'key-policy-title' }, 'Key policy');
    const policyError = el('div', { id: 'policy-error', class: 'inline-error', role: 'alert' });
    const editor = el('textarea', { id: 'policy-editor', class: 'code', rows: '18',
      spellcheck: 'false', autocomplete: 'off', autocapitalize: 'none', wrap: 'off',
      'aria-label': 'Key policy (JSON)', 'aria-describedby': 'policy-error' });
    const save = el('button', { id: 'policy-save', type: 'button' }, 'Save policy');
    let answer;
    try {
      answer = await kms('GetKeyPolicy', { KeyId: m.KeyId, PolicyName: 'default' });
    } catch (error) {
      if (!page.current()) return;
      policyError.textContent = errorText(error);
      fill(section, heading, policyError);
      return;
    }
    if (!page.current()) return;
    editor.value = prettyJson(answer.Policy || '');
    save.addEventListener('click', async () => {
      policyError.textContent = '';
      let parsed;
      try {
        parsed = JSON.parse(editor.value);
      } catch (error) {
        policyError.textContent = `Invalid JSON: ${error.message}`;
        editor.focus();
        return;
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed) ||
        !Object.prototype.hasOwnProperty.call(parsed, 'Statement')) {
        policyError.textContent = 'Invalid policy: the document has no "Statement" member.';
        editor.focus();
        return;
      }
      save.disabled = true;
      try {
        await kms('PutKeyPolicy', { KeyId: m.KeyId, PolicyName: 'default', Policy: editor.value });
      } catch (error) {
        save.disabled = false;
        if (!page.current()) return;
        policyError.textContent = errorText(error);
        return;
      }
      save.disabled = false;
      if (!page.current()) return;
      editor.value = JSON.stringify(parsed, null, 2);
      showNotice('Key policy saved.');
    });
    fill(section, heading,
      el('p', { class: 'hint' }, 'The whole document replaces the key’s policy. ' +
        'A policy that would lock you out of changing it again is refused.'),
      editor, policyError, el('div', { class: 'actions' }, save));
  }

  async function loadKeyUsage(page) {
    const m = page.meta;
    const section = page.usageSection;
    const heading = el('h3', { id: 'key-usage-title' }, 'Calls in the last 24 hours');
    let records;
    try {
      records = await readAudit(5000);
    } catch (error) {
      if (!page.current()) return;
      const denied = error instanceof ApiError &&
        (error.status === 403 || /AccessDenied/.test(error.type));
      fill(section, heading, el('p', { class: 'muted', id: 'key-usage-unreadable' },
        denied ? 'audit log not readable with your permissions'
          : `audit log not readable: ${errorText(error)}`));
      return;
    }
    if (!page.current()) return;
    const hour = 3600000;
    const end = Math.ceil(Date.now() / hour) * hour;
    const start = end - 24 * hour;
    const counts = new Array(24).fill(0);
    let total = 0;
    for (const r of records) {
      if (r.phase === 'request') continue;
      if (!Array.isArray(r.keys) || !r.keys.includes(m.Arn)) continue;
      const t = Date.parse(r.time);
      if (Number.isNaN(t) || t < start || t >= end) continue;
      counts[Math.floor((t - start) / hour)]++;
      total++;
    }
    const chart = barChart({
      id: 'key-usage-chart',
      start, step: hour, series: [{ label: 'calls', colour: SERIES_COLOURS[0], counts }],
      label: `Calls naming this key per hour over the last 24 hours: ${total} in all`,
      width: Math.max(300, Math.min(1100, (section.clientWidth || 800) - 40)),
      height: 160,
    });
    fill(section, heading, chart,
      el('p', { class: 'hint' }, `${total} call(s) in the last 24 hours, from the last ` +
        `${records.length} audit records (hourly; ${timezoneLabel()}).`));
  }

  // ---------------------------------------------------------------------------------------
  // Charts (SVG through createElementNS; presentation attributes only)
  // ---------------------------------------------------------------------------------------
  function axisLabel(date, step) {
    if (step >= 86400000) return formatLocal(date, false).slice(0, 10);
    if (step >= 3600000) return formatLocal(date, false).slice(5);
    return formatLocal(date, step < 60000).slice(11);
  }

  // Stacked bars: `series` [{label, colour, counts[]}] over buckets of `step` ms from `start`.
  function barChart({ id, start, step, series, label, width, height }) {
    const buckets = series.length ? series[0].counts.length : 0;
    const margin = { top: 10, right: 30, bottom: 26, left: 36 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;
    const totals = new Array(buckets).fill(0);
    for (const s of series) s.counts.forEach((c, i) => { totals[i] += c; });
    const max = Math.max(1, ...totals);
    const niceMax = max <= 5 ? max : Math.ceil(max / 5) * 5;
    const root = svg('svg', {
      id, class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': label, preserveAspectRatio: 'xMinYMin meet',
    });
    root.appendChild(svg('title', { text: label }));
    const y = (v) => margin.top + plotH - (v / niceMax) * plotH;
    for (const tick of [0, niceMax / 2, niceMax]) {
      const ty = y(tick);
      root.appendChild(svg('line', { x1: margin.left, x2: width - margin.right, y1: ty, y2: ty,
        stroke: '#d0d4da', 'stroke-width': 1 }));
      if (tick === niceMax / 2 && !Number.isInteger(tick)) continue;
      root.appendChild(svg('text', { x: margin.left - 6, y: ty + 4, 'text-anchor': 'end',
        'font-size': 11, fill: '#555b63', text: String(tick) }));
    }
    const slot = plotW / Math.max(1, buckets);
    const barW = Math.max(1, slot * 0.8);
    for (let i = 0; i < buckets; i++) {
      let base = 0;
      const x = margin.left + i * slot + (slot - barW) / 2;
      const from = new Date(start + i * step);
      for (const s of series) {
        const c = s.counts[i];
        if (!c) continue;
        const top = y(base + c);
        const rect = svg('rect', { x: x.toFixed(2), y: top.toFixed(2), width: barW.toFixed(2),
          height: Math.max(0.5, y(base) - top).toFixed(2), fill: s.colour });
        rect.appendChild(svg('title', {
          text: `${s.label}: ${c} call(s) from ${formatLocal(from)}`,
        }));
        root.appendChild(rect);
        base += c;
      }
    }
    root.appendChild(svg('line', { x1: margin.left, x2: width - margin.right,
      y1: margin.top + plotH, y2: margin.top + plotH, stroke: '#8a9099', 'stroke-width': 1 }));
    // Axis labels at a regular interval of buckets, as many as fit.
    const every = Math.max(1, Math.ceil(buckets / Math.max(1, Math.floor(plotW / 120))));
    for (let i = 0; i < buckets; i += every) {
      const x = margin.left + i * slot + slot / 2;
      root.appendChild(svg('text', {
        x: x.toFixed(2), y: height - 8, 'font-size': 11, fill: '#555b63',
        'text-anchor': i === 0 ? 'start' : 'middle',
        text: axisLabel(new Date(start + i * step), step),
      }));
    }
    return root;
  }

  function legend(series) {
    return el('ul', { class: 'legend', id: 'audit-chart-legend' }, series.map((s) => {
      const swatch = svg('svg', { width: 12, height: 12, 'aria-hidden': 'true',
        class: 'swatch' }, svg('rect', { width: 12, height: 12, rx: 2, fill: s.colour }));
      return el('li', { title: s.title || s.label }, swatch, ' ', s.label, ` (${s.total})`);
    }));
  }

  const STEPS = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800, 2592000,
  ].map((s) => s * 1000);

  function bucketStep(range) {
    const wanted = range / 60; // at most 60 buckets, and (steps grow ≤ 2.5×) at least 24
    return STEPS.find((s) => s >= wanted) || Math.ceil(wanted / 86400000) * 86400000;
  }

  // ---------------------------------------------------------------------------------------
  // Identities
  // ---------------------------------------------------------------------------------------
  const ENTITY = {
    user: { list: 'ListUsers', listName: 'Users', name: 'UserName', title: 'User',
      plural: 'Users', policies: 'ListUserPolicies', get: 'GetUserPolicy' },
    group: { list: 'ListGroups', listName: 'Groups', name: 'GroupName', title: 'Group',
      plural: 'Groups', policies: 'ListGroupPolicies', get: 'GetGroupPolicy' },
    role: { list: 'ListRoles', listName: 'Roles', name: 'RoleName', title: 'Role',
      plural: 'Roles', policies: 'ListRolePolicies', get: 'GetRolePolicy' },
  };

  async function listEntities(kind) {
    const e = ENTITY[kind];
    const doc = await iam(e.list);
    return xmlMembers(doc, e.listName).map((m) => ({
      name: xmlText(m, e.name),
      arn: xmlText(m, 'Arn'),
      id: xmlText(m, `${e.title}Id`),
      created: parseTime(xmlText(m, 'CreateDate')),
    }));
  }

  function renderIdentities(current) {
    const sections = {};
    for (const kind of ['user', 'group', 'role']) {
      sections[kind] = el('section', { class: 'card', 'aria-labelledby': `${kind}s-title` },
        el('h3', { id: `${kind}s-title` }, ENTITY[kind].plural), loading());
    }
    setMain(el('h2', null, 'Identities'), sections.user, sections.group, sections.role);
    for (const kind of ['user', 'group', 'role']) {
      listEntities(kind).then((entities) => {
        if (!current()) return;
        entities.sort((a, b) => a.name.localeCompare(b.name));
        const tbody = el('tbody', null, entities.map((x) => el('tr', { dataset: { name: x.name } },
          el('td', null, el('a', { href: `#/identities/${kind}/${encodeURIComponent(x.name)}` },
            x.name)),
          el('td', { class: 'mono' }, breakable(x.arn)),
          el('td', { class: 'nowrap' }, timeEl(x.created)))));
        if (!entities.length) {
          tbody.appendChild(el('tr', { class: 'empty' }, el('td', { colspan: '3' }, 'None.')));
        }
        fill(sections[kind],
          el('h3', { id: `${kind}s-title` }, ENTITY[kind].plural),
          tableWrap(el('table', { id: `${kind}s-table`, class: 'data' },
            el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Name'),
              el('th', { scope: 'col' }, 'ARN'), el('th', { scope: 'col' }, 'Created'))),
            tbody)));
      }).catch((error) => {
        if (!current()) return;
        showError(error);
        fill(sections[kind], el('h3', { id: `${kind}s-title` }, ENTITY[kind].plural),
          el('p', { class: 'muted' }, `The ${ENTITY[kind].plural.toLowerCase()} could not be listed.`));
      });
    }
  }

  async function renderEntity(kind, name, current) {
    const e = ENTITY[kind];
    const title = el('h2', { id: 'entity-title', class: 'break' }, `${e.title} ${name}`);
    const details = el('dl', { class: 'meta', id: 'entity-metadata' });
    const policies = el('div', { id: 'entity-policies' }, loading());
    const simulate = el('p');
    setMain(el('p', { class: 'crumbs' }, el('a', { href: '#/identities' }, 'Identities'), ' / '),
      title, details, simulate,
      el('section', { class: 'card', 'aria-labelledby': 'entity-policies-title' },
        el('h3', { id: 'entity-policies-title' }, 'Inline policies'), policies));

    listEntities(kind).then((entities) => {
      if (!current()) return;
      const x = entities.find((y) => y.name === name);
      if (!x) return;
      details.append(el('dt', null, 'ARN'), el('dd', { class: 'mono break' }, breakable(x.arn)),
        el('dt', null, 'Id'), el('dd', { class: 'mono' }, x.id),
        el('dt', null, 'Created'), el('dd', null, timeEl(x.created)));
      if (kind !== 'group') {
        const link = el('a', { href: '#/simulator', id: 'entity-simulate' },
          'Simulate this principal’s permissions');
        link.addEventListener('click', () => { state.simulator.principal = x.arn; });
        fill(simulate, link);
      }
    }).catch((error) => {
      if (current()) showError(error);
    });

    let names;
    try {
      const doc = await iam(e.policies, { [e.name]: name });
      names = xmlMembers(doc, 'PolicyNames').map((m) => m.textContent);
    } catch (error) {
      if (!current()) return;
      showError(error);
      fill(policies, el('p', { class: 'muted' }, 'The policies could not be listed.'));
      return;
    }
    if (!current()) return;
    if (!names.length) {
      fill(policies, el('p', { class: 'muted' }, 'No inline policy.'));
      return;
    }
    const results = await mapLimit(names, CONCURRENCY, async (policyName) => {
      const doc = await iam(e.get, { [e.name]: name, PolicyName: policyName });
      const encoded = xmlText(xmlFind(doc, `Get${e.title}PolicyResult`) || doc, 'PolicyDocument') ||
        (xmlFind(doc, 'PolicyDocument') || {}).textContent || '';
      let text;
      try {
        text = decodeURIComponent(encoded);
      } catch (_) {
        text = encoded;
      }
      return prettyJson(text);
    });
    if (!current()) return;
    fill(policies, ...names.map((policyName, i) => {
      const r = results[i];
      if (!r.ok) showError(r.error);
      return el('details', { dataset: { policy: policyName }, open: names.length <= 3 },
        el('summary', null, policyName),
        r.ok ? el('pre', { class: 'code' }, r.value)
          : el('p', { class: 'inline-error' }, errorText(r.error)));
    }));
  }

  // ---------------------------------------------------------------------------------------
  // Policy simulator
  // ---------------------------------------------------------------------------------------
  function splitList(text) {
    return String(text || '').split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  }

  function renderSimulator(current) {
    const s = state.simulator;
    if (!s.principal && state.session) s.principal = state.session.Arn || '';
    const principal = el('input', { id: 'sim-principal', value: s.principal, class: 'mono',
      spellcheck: 'false', autocomplete: 'off' });
    const policy = el('textarea', { id: 'sim-policy', class: 'code', rows: '8',
      spellcheck: 'false', autocomplete: 'off', wrap: 'off',
      placeholder: '{"Version": "2012-10-17", "Statement": [...]}' });
    policy.value = s.policy;
    const actions = el('input', { id: 'sim-actions', value: s.actions, class: 'mono',
      placeholder: 'kms:Encrypt kms:ScheduleKeyDeletion', spellcheck: 'false',
      autocomplete: 'off', required: true });
    const resources = el('input', { id: 'sim-resources', value: s.resources, class: 'mono',
      placeholder: '*', spellcheck: 'false', autocomplete: 'off' });
    const submit = el('button', { id: 'sim-submit', type: 'submit' }, 'Simulate');
    const results = el('div', { id: 'sim-output' });
    const form = el('form', { id: 'simulator', class: 'stack wide' },
      field('sim-principal', 'Principal ARN (user or role)', principal),
      field('sim-policy', 'Custom identity policy (optional)', policy,
        'When given, the simulation judges this document as the caller’s only policy ' +
        '(SimulateCustomPolicy) instead of the principal’s policies.'),
      field('sim-actions', 'Actions', actions, 'Separated by spaces or commas.'),
      field('sim-resources', 'Resources', resources,
        'ARNs separated by spaces or commas; empty means "*".'),
      el('div', { class: 'actions' }, submit));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearError();
      s.principal = principal.value.trim();
      s.policy = policy.value;
      s.actions = actions.value;
      s.resources = resources.value;
      const actionList = splitList(actions.value);
      const resourceList = splitList(resources.value);
      if (!resourceList.length) resourceList.push('*');
      if (!actionList.length) {
        showError('ValidationError: name at least one action (e.g. kms:Encrypt)');
        actions.focus();
        return;
      }
      const params = {};
      let operation;
      if (policy.value.trim()) {
        try {
          JSON.parse(policy.value);
        } catch (error) {
          showError(`Invalid JSON: ${error.message}`);
          policy.focus();
          return;
        }
        operation = 'SimulateCustomPolicy';
        params['PolicyInputList.member.1'] = policy.value;
      } else {
        if (!s.principal) {
          showError('ValidationError: give a principal ARN or a custom policy');
          principal.focus();
          return;
        }
        operation = 'SimulatePrincipalPolicy';
        params.PolicySourceArn = s.principal;
      }
      actionList.forEach((a, i) => { params[`ActionNames.member.${i + 1}`] = a; });
      resourceList.forEach((r, i) => { params[`ResourceArns.member.${i + 1}`] = r; });
      submit.disabled = true;
      fill(results, loading());
      let doc;
      try {
        doc = await iam(operation, params);
      } catch (error) {
        submit.disabled = false;
        if (!current()) return;
        showError(error);
        results.replaceChildren();
        return;
      }
      submit.disabled = false;
      if (!current()) return;
      const rows = xmlMembers(doc, 'EvaluationResults').map((m) => {
        const decision = xmlText(m, 'EvalDecision');
        const matched = xmlChildren(xmlChild(m, 'MatchedStatements'), 'member').map((st) => {
          const source = xmlText(st, 'SourcePolicyId');
          const sid = xmlText(st, 'Sid');
          return sid ? `${source} (${sid})` : source;
        });
        return el('tr', { dataset: { decision } },
          el('td', { class: 'mono' }, xmlText(m, 'EvalActionName')),
          el('td', { class: 'mono break-word' }, breakable(xmlText(m, 'EvalResourceName'))),
          el('td', null, decisionBadge(decision)),
          el('td', { class: 'mono' }, matched.length
            ? matched.map((t, i) => [i ? el('br') : null, t])
            : el('span', { class: 'muted' }, '—')));
      });
      fill(results,
        el('h3', null, operation === 'SimulateCustomPolicy'
          ? 'Results for the custom policy' : 'Results for the principal'),
        tableWrap(el('table', { id: 'sim-results', class: 'data' },
          el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Action'),
            el('th', { scope: 'col' }, 'Resource'), el('th', { scope: 'col' }, 'Decision'),
            el('th', { scope: 'col' }, 'Matched statements'))),
          el('tbody', null, rows))));
    });

    setMain(el('h2', null, 'Policy simulator'),
      el('p', { class: 'muted' }, 'Ask what a principal, or a policy document, would be ' +
        'allowed to do. Nothing is changed.'),
      form, results);
  }

  // ---------------------------------------------------------------------------------------
  // Audit log
  // ---------------------------------------------------------------------------------------
  function recordOutcome(r) {
    return r && r.outcome && typeof r.outcome === 'object' ? r.outcome : null;
  }

  function auditMatches(r, f, range) {
    if (r.phase === 'request' && !f.showRequests) return false;
    if (f.principal && !String(r.principal || '').toLowerCase()
      .includes(f.principal.toLowerCase())) return false;
    if (f.key) {
      const needle = f.key.toLowerCase();
      if (!Array.isArray(r.keys) || !r.keys.some((k) => String(k).toLowerCase().includes(needle))) {
        return false;
      }
    }
    if (f.operation && !String(r.operation || '').toLowerCase()
      .includes(f.operation.toLowerCase())) return false;
    const outcome = recordOutcome(r);
    if (f.outcome === 'Ok' && !(outcome && outcome.code === 'Ok')) return false;
    if (f.outcome === 'refused' && !(outcome && outcome.code !== 'Ok')) return false;
    if (range.from !== null || range.to !== null) {
      const t = Date.parse(r.time);
      if (Number.isNaN(t)) return false;
      if (range.from !== null && t < range.from) return false;
      if (range.to !== null && t > range.to) return false;
    }
    return true;
  }

  function localInputTime(text) {
    if (!text) return null;
    const t = new Date(text).getTime(); // datetime-local: a local time without offset
    return Number.isNaN(t) ? null : t;
  }

  function renderAudit(current) {
    const f = state.audit;
    const input = (id, value, props) => el('input', Object.assign({ id, value,
      autocomplete: 'off', spellcheck: 'false' }, props || {}));
    const principal = input('audit-principal', f.principal,
      { type: 'search', placeholder: 'user/alice' });
    const key = input('audit-key', f.key, { type: 'search', placeholder: 'key id or ARN' });
    const operation = input('audit-operation', f.operation,
      { type: 'search', placeholder: 'kms:Encrypt' });
    const outcome = el('select', { id: 'audit-outcome' },
      el('option', { value: 'any' }, 'any'), el('option', { value: 'Ok' }, 'Ok'),
      el('option', { value: 'refused' }, 'refused'));
    outcome.value = f.outcome;
    const from = input('audit-from', f.from, { type: 'datetime-local', step: '1' });
    const to = input('audit-to', f.to, { type: 'datetime-local', step: '1' });
    const lines = input('audit-lines', String(f.lines),
      { type: 'number', min: '1', max: '10000', step: '1', class: 'short' });
    const showRequests = el('input', { id: 'audit-show-requests', type: 'checkbox',
      checked: f.showRequests });
    const refresh = el('button', { id: 'audit-refresh', type: 'submit' }, 'Refresh');
    const form = el('form', { id: 'audit-filters', class: 'filters',
      'aria-label': 'Filter the audit log' },
    field('audit-principal', 'Principal', principal),
    field('audit-key', 'Key', key),
    field('audit-operation', 'Operation', operation),
    field('audit-outcome', 'Outcome', outcome),
    field('audit-from', 'From (local time)', from, null, 'wide-field'),
    field('audit-to', 'To (local time)', to, null, 'wide-field'),
    field('audit-lines', 'Last lines', lines),
    el('div', { class: 'field checkbox' }, showRequests,
      el('label', { for: 'audit-show-requests' }, 'Show "request" records')),
    el('div', { class: 'field actions-field' }, refresh));

    const count = el('p', { id: 'audit-count', class: 'count', 'aria-live': 'polite' });
    const chartBox = el('div', { class: 'chart-box', id: 'audit-chart-box' });
    const tableBox = el('div');
    setMain(el('h2', null, 'Audit log'), form, count,
      el('section', { class: 'card', 'aria-labelledby': 'audit-chart-title' },
        el('h3', { id: 'audit-chart-title' }, 'Calls per key over time'), chartBox),
      tableBox);

    let records = [];
    let loaded = false;

    function readFilters() {
      f.principal = principal.value.trim();
      f.key = key.value.trim();
      f.operation = operation.value.trim();
      f.outcome = outcome.value;
      f.from = from.value;
      f.to = to.value;
      f.showRequests = showRequests.checked;
      const n = Math.floor(Number(lines.value));
      f.lines = Number.isFinite(n) && n >= 1 ? Math.min(n, 10000) : 1000;
    }

    function redraw() {
      if (!loaded) return;
      readFilters();
      const range = { from: localInputTime(f.from), to: localInputTime(f.to) };
      const shown = records.filter((r) => auditMatches(r, f, range));
      count.textContent = `${shown.length} records match (of ${records.length} read)`;
      drawAuditChart(chartBox, shown, range);
      drawAuditTable(tableBox, shown);
    }

    let timer = 0;
    const soon = () => { window.clearTimeout(timer); timer = window.setTimeout(redraw, 150); };
    for (const control of [principal, key, operation, from, to]) {
      control.addEventListener('input', soon);
    }
    outcome.addEventListener('change', redraw);
    showRequests.addEventListener('change', redraw);
    from.addEventListener('change', redraw);
    to.addEventListener('change', redraw);

    async function load() {
      readFilters();
      lines.value = String(f.lines);
      clearError();
      refresh.disabled = true;
      fill(tableBox, loading());
      try {
        const [read] = await Promise.all([
          readAudit(f.lines),
          state.aliasesByKey.size ? null : listAllAliases().catch(() => null),
        ]);
        records = read;
      } catch (error) {
        refresh.disabled = false;
        if (!current()) return;
        showError(error);
        fill(tableBox, el('p', { class: 'muted' }, 'The audit log could not be read.'));
        return;
      }
      refresh.disabled = false;
      if (!current()) return;
      loaded = true;
      redraw();
    }
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      load();
    });
    load();
  }

  function drawAuditChart(box, shown, range) {
    // Key ARNs only: an alias ARN in `keys` (CreateAlias, DeleteAlias) is not a key.
    const keyed = shown
      .map((r) => ({ time: Date.parse(r.time),
        keys: (Array.isArray(r.keys) ? r.keys : []).filter((k) => keyIdOfArn(k)) }))
      .filter((r) => r.keys.length && !Number.isNaN(r.time));
    if (!keyed.length) {
      fill(box, el('p', { class: 'muted', id: 'audit-chart-empty' },
        'No matching record names a key.'));
      return;
    }
    const times = keyed.map((r) => r.time);
    let from = range.from !== null ? range.from : Math.min(...times);
    let to = range.to !== null ? range.to : Math.max(...times);
    if (to - from < 30000) from = to - 30000; // at least 30 one-second buckets
    const step = bucketStep(to - from);
    const start = Math.floor(from / step) * step;
    const buckets = Math.max(1, Math.floor((to - start) / step) + 1);

    const perKey = new Map();
    for (const r of keyed) for (const k of r.keys) perKey.set(k, (perKey.get(k) || 0) + 1);
    const ranked = Array.from(perKey.entries()).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = ranked.slice(0, 8).map(([arn]) => arn);
    const index = new Map(top.map((arn, i) => [arn, i]));
    const series = top.map((arn, i) => ({
      label: keyLabel(arn), title: arn, colour: SERIES_COLOURS[i],
      counts: new Array(buckets).fill(0), total: 0,
    }));
    const other = { label: 'other', title: 'every other key', colour: SERIES_COLOURS[8],
      counts: new Array(buckets).fill(0), total: 0 };
    for (const r of keyed) {
      const b = Math.floor((r.time - start) / step);
      if (b < 0 || b >= buckets) continue;
      for (const k of r.keys) {
        const s = index.has(k) ? series[index.get(k)] : other;
        s.counts[b]++;
        s.total++;
      }
    }
    if (other.total) series.push(other);
    const width = Math.max(320, Math.min(1100, (box.clientWidth || 800)));
    const chart = barChart({
      id: 'audit-chart', start, step, series, width, height: 220,
      label: `Calls per key, ${buckets} buckets of ${stepText(step)} from ` +
        `${formatLocal(new Date(start))}`,
    });
    fill(box, chart, legend(series),
      el('p', { class: 'hint' }, `Buckets of ${stepText(step)}; times in ${timezoneLabel()}. ` +
        'A call naming several keys counts once for each.'));
  }

  function stepText(step) {
    const s = step / 1000;
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${s / 60} min`;
    if (s < 86400) return `${s / 3600} h`;
    return `${s / 86400} d`;
  }

  function drawAuditTable(box, shown) {
    const newest = shown.slice().reverse().slice(0, 500);
    const tbody = el('tbody', null, newest.map((r) => {
      const o = recordOutcome(r);
      const t = parseTime(r.time);
      const keys = Array.isArray(r.keys) ? r.keys : [];
      const outcomeText = o ? o.code : (r.phase === 'request' ? '(pending)' : '');
      return el('tr', {
        dataset: { phase: r.phase || '', requestId: r.request_id || '', seq: String(r.seq ?? '') },
        class: o && o.code !== 'Ok' ? 'refused' : null,
      },
      el('td', { class: 'nowrap' }, timeEl(t)),
      el('td', { class: 'mono' }, r.operation || '',
        r.phase && r.phase !== 'call' && r.phase !== 'response'
          ? [' ', el('span', { class: 'phase' }, r.phase)] : null),
      el('td', { class: 'mono break-word',
        title: r.access_key_id ? `access key ${r.access_key_id}` : null }, breakable(r.principal)),
      el('td', { class: 'mono' }, keys.map((k, i) => [i ? el('br') : null, resourceLink(k)])),
      el('td', null,
        o ? badge(o.code, o.code === 'Ok' ? 'ok' : 'bad') : outcomeText,
        o && o.reason ? [' ', el('span', { class: 'reason' }, o.reason)] : null,
        r.count !== undefined ? ` (${r.count} refusals${r.throttled ? `, ${r.throttled} throttled` : ''})` : null),
      el('td', { class: 'mono' }, r.source || ''),
      el('td', { class: 'mono' }, r.door || ''));
    }));
    fill(box,
      shown.length > 500
        ? el('p', { class: 'hint' }, `The newest 500 of ${shown.length} are shown.`) : null,
      tableWrap(el('table', { id: 'audit-table', class: 'data' },
        el('thead', null, el('tr', null,
          ['Time', 'Operation', 'Principal', 'Keys', 'Outcome', 'Source', 'Door']
            .map((h) => el('th', { scope: 'col' }, h)))),
        tbody)));
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

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
