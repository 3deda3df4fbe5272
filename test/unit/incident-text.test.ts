import {
  chatEscape,
  cleanText,
  mdBlock,
  mdInline,
  multiLineProblem,
  oneLine,
  singleLineProblem,
} from '../../src/services/incidents/incident-text.ts';
import { renderInitial } from '../../src/services/incidents/notification-templates.ts';
import type { Incident } from '../../src/services/incidents/incident-model.ts';

describe('incident texts', () => {
  it.each(['a\nb', 'a\rb', 'a\u001b[2Jb', 'a\u0000', 'a\u007f', 'a\u009b', 'a\u2028b', 'a\u202eb', 'a\u2066b', 'a\u200fb', 'a\tb'])(
    'a single-line text refuses %j',
    (text) => expect(singleLineProblem(text)).toBeDefined(),
  );

  it('a multi-line text takes LF, CRLF and tabs, nothing else of the kind', () => {
    expect(multiLineProblem('one\r\ntwo\n\tthree')).toBeUndefined();
    for (const bad of ['a\rb', 'a\u001bb', 'a\u0007', 'a\u202eb', 'a\u009bc']) expect(multiLineProblem(bad)).toBeDefined();
    expect(cleanText('one\r\ntwo password=x')).toBe('one\ntwo password=[redacted]');
  });

  it('alert texts lose their controls (replaced, not refused)', () => {
    expect(oneLine('Disk\u001b]0;x\u0007Full\nSubject: y\u202e')).toBe('Disk ]0;x Full Subject: y ');
  });

  it('chat text escapes Slack markup and breaks mass mentions', () => {
    expect(chatEscape('<!channel> <https://evil|ok> & <@U1> @here @all')).toBe(
      '&lt;!channel&gt; &lt;https://evil|ok&gt; &amp; &lt;@U1&gt; @\u200bhere @\u200ball',
    );
  });

  it('a notification subject stays one line whatever the title', () => {
    const incident = {
      id: 'INC-20260101-1',
      severity: 'P1',
      title: 'x\nSubject: forged',
      summary: 's',
      components: [],
      status: 'investigating',
      roles: {},
      startedAt: '2026-01-01T00:00:00.000Z',
      nextUpdateDueAt: null,
    } as unknown as Incident;
    expect(
      renderInitial(incident)
        .split('\n')
        .filter((l) => l.startsWith('Subject:')),
    ).toEqual(['Subject: [P1] SAV3 System Incident - x Subject: forged']);
  });

  it('Markdown: no raw HTML, no forged headings, quotes, lists, fences or rules; cells stay cells', () => {
    expect(mdBlock('ok\n# h\n  ## h2\n> q\n- l\n1. n\n```\n---\n<script>x</script> & y')).toBe(
      ['ok', '\\# h', '  \\## h2', '&gt; q', '\\- l', '1\\. n', '\\```', '\\---', '&lt;script&gt;x&lt;/script&gt; &amp; y'].join('  \n'),
    );
    expect(mdInline('a | b\n# c <b>')).toBe('a \\| b # c &lt;b&gt;');
    expect(mdBlock('token=abc')).toBe('token=[redacted]');
  });
});
