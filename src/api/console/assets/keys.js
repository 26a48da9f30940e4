// Keyhaven web console: the keys list and the create-key form (after core.js).
'use strict';

(() => {
  const {
    state, CONCURRENCY, el, fill, setMain, loading, tableWrap, badge, stateBadge, keyLink, field,
    fromEpochSeconds, timeEl, errorText, showError, clearError, clearNotice, kms, mapLimit,
    listAllKeys, listAllAliases, route, navigate,
  } = window.Keyhaven;

  const KEY_STATES = ['Enabled', 'Disabled', 'PendingDeletion', 'PendingImport', 'Unavailable'];
  const KEY_SPECS = [
    'SYMMETRIC_DEFAULT', 'HMAC_224', 'HMAC_256', 'HMAC_384', 'HMAC_512',
    'RSA_2048', 'RSA_3072', 'RSA_4096',
    'ECC_NIST_P256', 'ECC_NIST_P384', 'ECC_NIST_P521', 'ECC_SECG_P256K1',
  ];
  const KEY_USAGES = ['ENCRYPT_DECRYPT', 'SIGN_VERIFY', 'GENERATE_VERIFY_MAC', 'KEY_AGREEMENT'];

  function usagesForSpec(spec) {
    if (spec === 'SYMMETRIC_DEFAULT') return ['ENCRYPT_DECRYPT'];
    if (spec.startsWith('HMAC_')) return ['GENERATE_VERIFY_MAC'];
    if (spec.startsWith('RSA_')) return ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'];
    if (spec === 'ECC_SECG_P256K1') return ['SIGN_VERIFY'];
    if (spec.startsWith('ECC_NIST_')) return ['SIGN_VERIFY', 'KEY_AGREEMENT'];
    return KEY_USAGES.slice();
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

  Object.assign(window.Keyhaven, { renderKeys, renderCreate });
})();
