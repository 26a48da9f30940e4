// Keyhaven web console: the key page, its deletion dialog, rotation, policy editor and
// usage chart (after core.js and charts.js).
'use strict';

(() => {
  const {
    el, main, fill, setMain, breakable, loading, tableWrap, badge, stateBadge, field, prettyJson,
    formatLocal, fromEpochSeconds, timeEl, timezoneLabel, errorText, showError, clearError,
    showNotice, ApiError, kms, readAudit, SERIES_COLOURS, barChart,
  } = window.Keyhaven;

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

  Object.assign(window.Keyhaven, { renderKeyPage });
})();
