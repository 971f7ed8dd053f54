// A safe Markdown subset for replies: paragraphs, fenced code blocks, lists, inline code, emphasis and links
// (http, https and mailto only). It builds DOM nodes and sets only textContent, so any HTML in a reply is shown as
// text; nothing here ever parses a string as HTML.

const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

/** Replaces the children of `container` with `text` rendered as Markdown. */
export function renderMarkdown(container, text) {
  const fragment = document.createDocumentFragment();
  for (const block of parseBlocks(text)) fragment.append(renderBlock(block));
  container.replaceChildren(fragment);
}

/** Splits text into blocks: {type: "code", lang, text} | {type: "list", ordered, items} | {type: "p", lines}. */
export function parseBlocks(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let paragraph = null;
  let list = null;
  const close = () => { paragraph = null; list = null; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+-]*)\s*$/);
    if (fence) {
      close();
      const body = [];
      // An unclosed fence (a reply still streaming) runs to the end.
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) body.push(lines[i]);
      blocks.push({ type: "code", lang: fence[2], text: body.join("\n") });
      continue;
    }
    const item = line.match(/^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/);
    if (item) {
      const ordered = item[2] !== undefined;
      if (!list || list.ordered !== ordered) {
        paragraph = null;
        list = { type: "list", ordered, start: ordered ? Number(item[2]) : 1, items: [] };
        blocks.push(list);
      }
      list.items.push(item[3]);
      continue;
    }
    if (line.trim() === "") { close(); continue; }
    if (list && /^\s{2,}\S/.test(line)) { list.items[list.items.length - 1] += " " + line.trim(); continue; }
    list = null;
    if (!paragraph) { paragraph = { type: "p", lines: [] }; blocks.push(paragraph); }
    paragraph.lines.push(line);
  }
  return blocks;
}

function renderBlock(block) {
  if (block.type === "code") {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    if (block.lang) code.dataset.lang = block.lang;
    code.textContent = block.text;
    pre.append(code);
    return pre;
  }
  if (block.type === "list") {
    const list = document.createElement(block.ordered ? "ol" : "ul");
    if (block.ordered && block.start !== 1) list.start = block.start;
    for (const text of block.items) {
      const li = document.createElement("li");
      appendInline(li, text);
      list.append(li);
    }
    return list;
  }
  const p = document.createElement("p");
  block.lines.forEach((line, index) => {
    if (index > 0) p.append(document.createElement("br"));
    appendInline(p, line);
  });
  return p;
}

// Inline forms, tried at each position; the earliest match wins.
const INLINE = [
  { type: "code", re: /`([^`]+)`/ },
  { type: "link", re: /\[([^\]]+)\]\(([^()\s]+)\)/ },
  { type: "strong", re: /\*\*(?=\S)(.+?)\*\*/ },
  { type: "em", re: /\*(?=[^\s*])([^*]+?)\*/ },
  { type: "em", re: /(?<![\p{L}\p{N}_])_(?=\S)([^_]+?)_(?![\p{L}\p{N}_])/u },
];

/** Appends `text` with inline Markdown to `parent` as text nodes and elements. */
export function appendInline(parent, text) {
  while (text.length > 0) {
    let best = null;
    for (const form of INLINE) {
      const match = form.re.exec(text);
      if (match && (best === null || match.index < best.match.index)) best = { form, match };
    }
    if (!best) { parent.append(document.createTextNode(text)); return; }
    const { form, match } = best;
    if (match.index > 0) parent.append(document.createTextNode(text.slice(0, match.index)));
    parent.append(renderInline(form.type, match));
    text = text.slice(match.index + match[0].length);
  }
}

function renderInline(type, match) {
  if (type === "code") {
    const code = document.createElement("code");
    code.textContent = match[1];
    return code;
  }
  if (type === "link") {
    const href = safeURL(match[2]);
    if (!href) return document.createTextNode(match[0]);  // not a link: shown as typed
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    appendInline(a, match[1]);
    return a;
  }
  const element = document.createElement(type);
  appendInline(element, match[1]);
  return element;
}

/** The URL when it is absolute http(s) or mailto, else null (javascript:, data:, relative paths…). */
export function safeURL(text) {
  try {
    const url = new URL(text);
    return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}
