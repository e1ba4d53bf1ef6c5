// TypeDoc plugin for iommu-sim's API docs:
// - `@linux` tags name the kernel code a TypeScript API mirrors. Each C identifier in one becomes inline code linked to
//   the kernel cross-reference (elixir.bootlin.com identifier search), each kernel source path a link to the file.
// - The Linux names go into the search index as their own field, so typing `arm_smmu_write_entry` into the docs'
//   search lands on the TypeScript that mirrors it.
// - Top-level exports are put in a category named after the folder under src/ they come from (core: kernel,
//   platform, machine, user, iommu, pgtable; a vendor package: hw, driver), unless their comment names one.
import { Comment, CommentTag, Converter, ReflectionKind, Renderer } from "typedoc";

export const ELIXIR = "https://elixir.bootlin.com/linux/latest";
const PATH = /\b(?:drivers|include|lib|kernel|mm|fs|arch|tools|Documentation|virt|block|net)\/[\w./-]*\w/g;
const IDENT = /\b[A-Za-z_][A-Za-z0-9_]*\b/g;
/** Words of prose an @linux tag may contain that are not kernel identifiers. */
const PROSE = new Set(
  "a an and as at by for from in into is it none not of on or per the to via with without like plus only when where which its their one two struct union enum".split(
    " ",
  ),
);

/** Whether `word`, standing alone in an @linux tag, names kernel code (not prose). */
function isKernelName(word, alone) {
  if (PROSE.has(word.toLowerCase())) return false;
  if (word.includes("_")) return true; // iommu_probe_device, refcount_t, IOMMU_READ, __iommu_attach_device
  return alone && /^[a-z][a-z0-9]*$/.test(word); // a lone lower-case word: memparse, kzalloc
}

/** The kernel identifiers an @linux tag's text names. */
export function linuxNames(text) {
  const withoutPaths = text.replace(PATH, " ");
  const words = withoutPaths.match(IDENT) ?? [];
  const alone = words.length === 1 || /^\s*(struct\s+)?[A-Za-z_]\w*\s*(\(\))?\s*$/.test(withoutPaths);
  return [...new Set(words.filter((w) => isKernelName(w, alone)))];
}

/** Markdown for an @linux tag's text: identifiers as linked inline code, source paths linked to the file. */
export function linuxMarkdown(text) {
  const names = new Set(linuxNames(text));
  let out = "";
  let last = 0;
  const spans = [];
  for (const m of text.matchAll(PATH)) spans.push({ start: m.index, end: m.index + m[0].length, path: m[0] });
  for (const m of text.matchAll(IDENT)) {
    if (!names.has(m[0])) continue;
    const start = m.index;
    if (spans.some((s) => start < s.end && start + m[0].length > s.start)) continue;
    spans.push({ start, end: start + m[0].length, ident: m[0] });
  }
  spans.sort((a, b) => a.start - b.start);
  for (const s of spans) {
    out += text.slice(last, s.start);
    out += s.path ? `[\`${s.path}\`](${ELIXIR}/source/${s.path})` : `[\`${s.ident}\`](${ELIXIR}/A/ident/${s.ident})`;
    last = s.end;
  }
  return out + text.slice(last);
}

function tagText(tag) {
  return tag.content.map((p) => (p.kind === "code" ? p.text.replace(/^`+|`+$/g, "") : p.text)).join("");
}

function commentsOf(refl) {
  const out = [];
  if (refl.comment) out.push(refl.comment);
  for (const s of refl.signatures ?? []) if (s.comment) out.push(s.comment);
  if (refl.getSignature?.comment) out.push(refl.getSignature.comment);
  if (refl.setSignature?.comment) out.push(refl.setSignature.comment);
  return out;
}

/** The folder under src/ a declaration comes from, as its category. */
function categoryOf(fileName) {
  const m = /\/packages\/[^/]+\/src\/([^/]+)\/.+$/.exec(fileName.replaceAll("\\", "/"));
  return m?.[1];
}

export function load(app) {
  app.converter.on(
    Converter.EVENT_RESOLVE_BEGIN,
    (context) => {
      const project = context.project;
      for (const refl of Object.values(project.reflections)) {
        // Categories for the exports of each module (package).
        if (refl.parent && (refl.parent.kindOf(ReflectionKind.Module) || refl.parent === project)) {
          const symbol = context.getSymbolFromReflection(refl);
          const file = symbol?.declarations?.[0]?.getSourceFile().fileName;
          const cat = file && categoryOf(file);
          if (cat) {
            const comment = (refl.comment ??= new Comment());
            const hasCategory = [refl.comment, ...(refl.signatures ?? []).map((s) => s.comment)].some((c) =>
              c?.blockTags.some((t) => t.tag === "@category"),
            );
            if (!hasCategory) comment.blockTags.push(new CommentTag("@category", [{ kind: "text", text: cat }]));
          }
        }
      }
    },
    100,
  );

  app.converter.on(Converter.EVENT_RESOLVE_END, (context) => {
    for (const refl of Object.values(context.project.reflections)) {
      for (const comment of commentsOf(refl)) {
        for (const tag of comment.blockTags) {
          if (tag.tag !== "@linux") continue;
          const text = tagText(tag);
          if (text.includes(`](${ELIXIR}/`)) continue; // already rewritten (a comment shared by two reflections)
          tag.content = [{ kind: "text", text: linuxMarkdown(text) }];
        }
      }
    }
  });

  // After conversion (and, in packages mode, after the packages are merged), index the Linux names.
  app.renderer.on(Renderer.EVENT_PREPARE_INDEX, (event) => {
    event.searchFieldWeights.linux = 5;
    event.searchResults.forEach((refl, i) => {
      const names = new Set();
      for (const comment of commentsOf(refl)) {
        for (const tag of comment.blockTags) {
          if (tag.tag !== "@linux") continue;
          // The tag was rewritten to markdown links: the names are the link texts.
          for (const m of tagText(tag).matchAll(/\[`([^`]+)`\]\(https:\/\/elixir[^)]*\/ident\/[^)]*\)/g))
            names.add(m[1]);
        }
      }
      if (names.size > 0) event.searchFields[i] = { ...event.searchFields[i], linux: [...names].join(" ") };
    });
  });
}
