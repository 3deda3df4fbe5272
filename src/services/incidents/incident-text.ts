// Free texts of incidents (titles, summaries, updates, alert labels) on their way in and out:
// no control characters or BiDi overrides (they rewrite an operator's terminal or reorder what a
// reader sees), no line breaks in single-line fields (a title is a notification's subject line),
// and each output escaped for its reader (Slack/Mattermost markup, Markdown and HTML).
import { redactSecrets } from '../redact-secrets.ts';

/** C0 and C1 controls and DEL, except tab and line feed (allowed in multi-line texts). */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const CONTROL_MULTI = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
/** Every C0 and C1 control and DEL, and the Unicode line and paragraph separators. */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const CONTROL_SINGLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
/** Bidirectional embeddings, overrides and isolates, and the directional marks. */
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

/** Why a single-line text (title, ETA) is refused, or undefined when it is fine. */
export function singleLineProblem(text: string): string | undefined {
  if (CONTROL_SINGLE.test(text)) return 'must be one line without control characters';
  if (BIDI.test(text)) return 'must not contain bidirectional control characters';
  return undefined;
}

/** Why a multi-line text (summary, message, root cause) is refused: tab, LF and CRLF are fine. */
export function multiLineProblem(text: string): string | undefined {
  if (CONTROL_MULTI.test(text.replace(/\r\n/g, '\n'))) return 'must not contain control characters other than tab and line breaks';
  if (BIDI.test(text)) return 'must not contain bidirectional control characters';
  return undefined;
}

/** An operator's text as stored: CRLF as LF, credentials redacted. */
export function cleanText(text: string): string {
  return redactSecrets(text.replace(/\r\n/g, '\n'));
}

const CONTROL_ALL = new RegExp(`${CONTROL_SINGLE.source}|${BIDI.source}`, 'g');

/**
 * A text from outside that cannot be refused (an alert label or annotation: a 400 would lose the
 * whole group): every control character, line break and BiDi control becomes a space.
 */
export function oneLine(text: string): string {
  return text.replace(CONTROL_ALL, ' ');
}

/** The same for a multi-line text: line feeds (and tabs) stay. */
export function stripControls(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(new RegExp(`${CONTROL_MULTI.source}|${BIDI.source}|[\u2028\u2029]`, 'g'), ' ');
}

/**
 * Slack's (and Mattermost's) escaping for message text: `&`, `<` and `>` as entities, so
 * `<!channel>`, `<@U123>` and `<https://evil|label>` show as typed and notify or link nobody.
 * Mattermost also mentions on a bare `@channel`, `@here`, `@all`: a zero-width space breaks those.
 */
export function chatEscape(text: string): string {
  return stripControls(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/@(channel|here|all|everyone)\b/gi, '@\u200b$1');
}

/** HTML-significant characters as entities (Markdown renderers pass raw HTML through). */
const html = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A Markdown inline text (a heading's text, a table cell): one line, no raw HTML, no cell break. */
export function mdInline(text: string): string {
  return html(oneLine(redactSecrets(text)))
    .replace(/([\\|])/g, '\\$1')
    .trim();
}

/**
 * A Markdown paragraph from free text: no raw HTML, and no line can start a heading, quote, list,
 * code fence, table or thematic break (the mark that would is escaped). Line breaks stay.
 */
export function mdBlock(text: string): string {
  return stripControls(redactSecrets(text))
    .split('\n')
    .map((line) =>
      html(line.replace(/\\/g, '\\\\'))
        .replace(/^(\s*)([#>=+~*_|`-])/, '$1\\$2')
        .replace(/^(\s*\d+)([.)])/, '$1\\$2'),
    )
    .join('  \n');
}
