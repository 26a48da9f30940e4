// Keyhaven web console: the identities (users, groups, roles) and the policy simulator
// (after core.js).
'use strict';

(() => {
  const {
    state, CONCURRENCY, el, fill, setMain, breakable, loading, tableWrap, decisionBadge, field,
    prettyJson, parseTime, timeEl, errorText, showError, clearError, iam, xmlChildren, xmlChild,
    xmlText, xmlFind, xmlMembers, mapLimit,
  } = window.Keyhaven;

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

  Object.assign(window.Keyhaven, { renderIdentities, renderEntity, renderSimulator });
})();
