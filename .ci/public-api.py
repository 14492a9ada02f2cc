#!/usr/bin/env python3
"""The public API of the `kinesis-client` library, one item per line, from rustdoc's JSON.

    .ci/public-api.py            # compare with api/kinesis-client.txt (exit 1 on a difference)
    .ci/public-api.py --write    # update api/kinesis-client.txt

Until a version is published (then `cargo-semver-checks` compares against it), this file is the
record of the API: CI fails when the API changes without it, so a change to the public API is a
visible decision in the diff. The listing is built with all features (the `testing` kit
included: its items are listed too, marked by the path) by `cargo rustdoc` with rustdoc's JSON
output, which is unstable: on a stable toolchain it needs RUSTC_BOOTSTRAP, which this script
sets for that one command and this one crate. The JSON format changes between toolchains: the file is made with
the toolchain CI uses (see `rust-version` in Cargo.toml); another toolchain may list the same
API differently.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_FILE = ROOT / "api" / "kinesis-client.txt"
CRATE = "kinesis_client"


def build_json():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    # Unstable options for this crate's rustdoc only: the dependencies build as on stable.
    env = dict(os.environ, RUSTC_BOOTSTRAP=CRATE)
    env.pop("RUSTDOCFLAGS", None)
    cmd = [
        "cargo", "rustdoc", "-q", "-p", "kinesis-client", "--lib", "--all-features",
        "--", "-Z", "unstable-options", "--output-format", "json",
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return json.loads((target / "doc" / f"{CRATE}.json").read_text())


class Api:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.lines = set()
        self.seen = set()

    # ---- types -------------------------------------------------------------------------
    def path_of(self, p):
        pid = p.get("id")
        known = self.paths.get(str(pid)) if pid is not None else None
        name = "::".join(known["path"]) if known else p.get("path") or p.get("name")
        return name + self.args(p.get("args"))

    def args(self, a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            ab = a["angle_bracketed"]
            parts = [self.generic_arg(x) for x in ab.get("args", [])]
            parts += [self.constraint(c) for c in ab.get("constraints", ab.get("bindings", []))]
            return "<" + ", ".join(parts) + ">" if parts else ""
        if "parenthesized" in a:
            pa = a["parenthesized"]
            out = "(" + ", ".join(self.ty(t) for t in pa.get("inputs", [])) + ")"
            if pa.get("output"):
                out += " -> " + self.ty(pa["output"])
            return out
        if a == "return_type_notation" or "return_type_notation" in a:
            return "(..)"
        return json.dumps(a, sort_keys=True)

    def generic_arg(self, x):
        if isinstance(x, str):
            return x
        if "type" in x:
            return self.ty(x["type"])
        if "lifetime" in x:
            return x["lifetime"]
        if "const" in x:
            c = x["const"]
            return c.get("expr", str(c)) if isinstance(c, dict) else str(c)
        return "_"

    def constraint(self, c):
        name = c["name"] + self.args(c.get("args"))
        b = c.get("binding", {})
        if "equality" in b:
            eq = b["equality"]
            return f"{name} = " + (self.ty(eq["type"]) if "type" in eq else str(eq))
        if "constraint" in b:
            return f"{name}: " + self.bounds(b["constraint"])
        return name

    def bounds(self, bs):
        return " + ".join(self.bound(b) for b in bs)

    def bound(self, b):
        if "trait_bound" in b:
            tb = b["trait_bound"]
            pre = "?" if tb.get("modifier") == "maybe" else ""
            hr = self.hrtb(tb.get("generic_params", []))
            return hr + pre + self.path_of(tb["trait"])
        if "outlives" in b:
            return b["outlives"]
        if "use" in b:
            return "use<" + ", ".join(u if isinstance(u, str) else next(iter(u.values())) for u in b["use"]) + ">"
        return json.dumps(b, sort_keys=True)

    def hrtb(self, params):
        return f"for<{', '.join(p['name'] for p in params)}> " if params else ""

    def ty(self, t):
        if t is None:
            return "()"
        if isinstance(t, str):
            return "_" if t == "infer" else t
        k, v = next(iter(t.items()))
        if k == "resolved_path":
            return self.path_of(v)
        if k == "primitive":
            return v
        if k == "generic":
            return v
        if k == "borrowed_ref":
            lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
            mut = "mut " if v.get("is_mutable", v.get("mutable")) else ""
            return f"&{lt}{mut}{self.ty(v['type'])}"
        if k == "raw_pointer":
            mut = "mut" if v.get("is_mutable", v.get("mutable")) else "const"
            return f"*{mut} {self.ty(v['type'])}"
        if k == "tuple":
            inner = ", ".join(self.ty(x) for x in v)
            return f"({inner},)" if len(v) == 1 else f"({inner})"
        if k == "slice":
            return f"[{self.ty(v)}]"
        if k == "array":
            return f"[{self.ty(v['type'])}; {v['len']}]"
        if k == "impl_trait":
            return "impl " + self.bounds(v)
        if k == "dyn_trait":
            parts = [self.hrtb(p.get("generic_params", [])) + self.path_of(p["trait"]) for p in v["traits"]]
            if v.get("lifetime"):
                parts.append(v["lifetime"])
            return "dyn " + " + ".join(parts)
        if k == "qualified_path":
            trait = v.get("trait")
            self_ty = self.ty(v["self_type"])
            base = f"<{self_ty} as {self.path_of(trait)}>" if trait else self_ty
            return f"{base}::{v['name']}{self.args(v.get('args'))}"
        if k == "function_pointer":
            sig = v.get("sig", v.get("decl"))
            return "fn(" + ", ".join(self.ty(x[1]) for x in sig["inputs"]) + ")" + self.ret(sig.get("output"))
        if k == "pat":
            return self.ty(v["type"])
        return json.dumps(t, sort_keys=True)

    def ret(self, out):
        return "" if out is None else " -> " + self.ty(out)

    def generics(self, g):
        params = [p for p in g.get("params", []) if not self.synthetic(p)]
        out = ""
        if params:
            out = "<" + ", ".join(self.param(p) for p in params) + ">"
        return out

    @staticmethod
    def synthetic(p):
        kind = p.get("kind", {})
        return isinstance(kind, dict) and kind.get("type", {}).get("is_synthetic", kind.get("type", {}).get("synthetic", False))

    def param(self, p):
        kind = p["kind"]
        if "lifetime" in kind:
            o = kind["lifetime"].get("outlives", [])
            return p["name"] + (": " + " + ".join(o) if o else "")
        if "type" in kind:
            b = kind["type"].get("bounds", [])
            d = kind["type"].get("default")
            return p["name"] + (": " + self.bounds(b) if b else "") + (" = " + self.ty(d) if d else "")
        if "const" in kind:
            return f"const {p['name']}: {self.ty(kind['const']['type'])}"
        return p["name"]

    def where_clause(self, g):
        preds = []
        for w in g.get("where_predicates", []):
            if "bound_predicate" in w:
                bp = w["bound_predicate"]
                preds.append(self.hrtb(bp.get("generic_params", [])) + self.ty(bp["type"]) + ": " + self.bounds(bp["bounds"]))
            elif "lifetime_predicate" in w:
                lp = w["lifetime_predicate"]
                preds.append(lp["lifetime"] + ": " + " + ".join(lp["outlives"]))
            elif "eq_predicate" in w:
                ep = w["eq_predicate"]
                preds.append(self.ty(ep["lhs"]) + " = " + json.dumps(ep["rhs"], sort_keys=True))
        return " where " + ", ".join(preds) if preds else ""

    def fn_sig(self, name, f):
        h = f.get("header", {})
        quals = "".join(q for q, on in (("const ", h.get("is_const", h.get("const"))), ("async ", h.get("is_async", h.get("async"))), ("unsafe ", h.get("is_unsafe", h.get("unsafe")))) if on)
        sig = f.get("sig", f.get("decl"))
        args = ", ".join(self.arg(n, t) for n, t in sig["inputs"])
        return f"{quals}fn {name}{self.generics(f['generics'])}({args}){self.ret(sig.get('output'))}{self.where_clause(f['generics'])}"

    def arg(self, name, t):
        if name == "self":
            s = self.ty(t)
            return {"Self": "self", "&Self": "&self", "&mut Self": "&mut self"}.get(s, f"self: {s}")
        return f"{name}: {self.ty(t)}"

    # ---- items -------------------------------------------------------------------------
    def attrs(self, item):
        out = []
        for a in item.get("attrs", []):
            text = a if isinstance(a, str) else json.dumps(a, sort_keys=True)
            if "non_exhaustive" in text:
                out.append("#[non_exhaustive] ")
            elif "must_use" in text:
                pass
        return "".join(out)

    def emit(self, line):
        self.lines.add(line)

    def module(self, mid, path):
        item = self.index[str(mid)]
        for cid in item["inner"]["module"]["items"]:
            self.item(cid, path)

    def item(self, iid, path, name=None):
        item = self.index.get(str(iid))
        if item is None or item.get("visibility") != "public":
            return
        kind, inner = next(iter(item["inner"].items()))
        name = name or item.get("name")
        here = f"{path}::{name}" if name else path
        key = (iid, here)
        if key in self.seen:
            return
        self.seen.add(key)
        a = self.attrs(item)
        if kind == "module":
            self.emit(f"pub mod {here}")
            self.module(iid, here)
        elif kind == "use":
            target = inner.get("id")
            alias = inner.get("name")
            if inner.get("is_glob", inner.get("glob")):
                if target is not None and str(target) in self.index and "module" in self.index[str(target)]["inner"]:
                    self.module(target, path)
                else:
                    self.emit(f"pub use {inner['source']}::* in {path}")
            elif target is not None and str(target) in self.index:
                self.item(target, path, alias)
            else:
                self.emit(f"pub use {inner['source']} as {path}::{alias}")
        elif kind == "struct":
            g = inner["generics"]
            self.emit(f"{a}pub struct {here}{self.generics(g)}{self.where_clause(g)}")
            sk = inner["kind"]
            if isinstance(sk, dict) and "plain" in sk:
                for fid in sk["plain"]["fields"]:
                    self.field(fid, here)
            elif isinstance(sk, dict) and "tuple" in sk:
                for i, fid in enumerate(sk["tuple"]):
                    if fid is not None:
                        f = self.index[str(fid)]
                        if f.get("visibility") == "public":
                            self.emit(f"pub {here}.{i}: {self.ty(f['inner']['struct_field'])}")
            self.impls(inner.get("impls", []), here)
        elif kind == "enum":
            g = inner["generics"]
            self.emit(f"{a}pub enum {here}{self.generics(g)}{self.where_clause(g)}")
            for vid in inner["variants"]:
                self.variant(vid, here)
            self.impls(inner.get("impls", []), here)
        elif kind == "union":
            self.emit(f"pub union {here}")
            self.impls(inner.get("impls", []), here)
        elif kind == "function":
            self.emit(f"pub {self.fn_sig(here, inner)}")
        elif kind == "trait":
            g = inner["generics"]
            sup = (": " + self.bounds(inner["bounds"])) if inner.get("bounds") else ""
            unsafe = "unsafe " if inner.get("is_unsafe") else ""
            self.emit(f"pub {unsafe}trait {here}{self.generics(g)}{sup}{self.where_clause(g)}")
            for mid in inner["items"]:
                self.assoc(mid, here, in_trait=True)
            for impl_id in inner.get("implementations", []):
                imp = self.index.get(str(impl_id))
                if imp and not imp["inner"]["impl"].get("is_synthetic"):
                    self.emit(f"impl {here} for {self.ty(imp['inner']['impl']['for'])}")
        elif kind == "type_alias":
            self.emit(f"pub type {here}{self.generics(inner['generics'])} = {self.ty(inner['type'])}")
        elif kind == "constant":
            ty = inner.get("type")
            self.emit(f"pub const {here}: {self.ty(ty)}")
        elif kind == "static":
            self.emit(f"pub static {here}: {self.ty(inner['type'])}")
        elif kind == "macro":
            self.emit(f"pub macro {here}!")
        elif kind == "proc_macro":
            self.emit(f"pub proc_macro {here}!")
        else:
            self.emit(f"pub {kind} {here}")

    def field(self, fid, owner):
        f = self.index[str(fid)]
        if f.get("visibility") == "public":
            self.emit(f"pub {owner}.{f['name']}: {self.ty(f['inner']['struct_field'])}")

    def variant(self, vid, owner):
        v = self.index[str(vid)]
        vk = v["inner"]["variant"]["kind"]
        here = f"{owner}::{v['name']}"
        a = self.attrs(v)
        if vk == "plain" or vk is None:
            self.emit(f"{a}pub {here}")
        elif "tuple" in vk:
            tys = [self.ty(self.index[str(f)]["inner"]["struct_field"]) if f is not None else "_" for f in vk["tuple"]]
            self.emit(f"{a}pub {here}({', '.join(tys)})")
        elif "struct" in vk:
            names = []
            for f in vk["struct"]["fields"]:
                fi = self.index[str(f)]
                names.append(f"{fi['name']}: {self.ty(fi['inner']['struct_field'])}")
            self.emit(f"{a}pub {here} {{ {', '.join(names)} }}")

    def impls(self, ids, owner):
        for impl_id in ids:
            imp = self.index.get(str(impl_id))
            if imp is None:
                continue
            i = imp["inner"]["impl"]
            if i.get("blanket_impl") is not None:
                continue
            g = i.get("generics", {})
            if i.get("trait") is None:
                for mid in i["items"]:
                    self.assoc(mid, owner, in_trait=False)
            else:
                neg = "!" if i.get("is_negative", i.get("negative")) else ""
                unsafe = "unsafe " if i.get("is_unsafe") else ""
                self.emit(f"{unsafe}impl{self.generics(g)} {neg}{self.path_of(i['trait'])} for {self.ty(i['for'])}{self.where_clause(g)}")

    def assoc(self, mid, owner, in_trait):
        m = self.index.get(str(mid))
        if m is None:
            return
        if not in_trait and m.get("visibility") != "public":
            return
        kind, inner = next(iter(m["inner"].items()))
        here = f"{owner}::{m['name']}"
        if kind == "function":
            default = " (provided)" if in_trait and inner.get("has_body") else ""
            self.emit(f"pub {self.fn_sig(here, inner)}{default}")
        elif kind == "assoc_type":
            b = inner.get("bounds", [])
            self.emit(f"pub type {here}" + (": " + self.bounds(b) if b else ""))
        elif kind == "assoc_const":
            self.emit(f"pub const {here}: {self.ty(inner['type'])}")
        elif kind == "constant":
            self.emit(f"pub const {here}: {self.ty(inner.get('type'))}")


def listing():
    doc = build_json()
    api = Api(doc)
    root = doc["root"]
    api.emit(f"pub mod {CRATE}")
    api.module(root, CRATE)
    # By path (an attribute such as `#[non_exhaustive]` does not move a line).
    return "\n".join(sorted(api.lines, key=lambda l: (l.replace("#[non_exhaustive] ", ""), l))) + "\n"


def main():
    text = listing()
    if "--write" in sys.argv[1:]:
        API_FILE.parent.mkdir(exist_ok=True)
        API_FILE.write_text(text)
        print(f"wrote {API_FILE.relative_to(ROOT)} ({text.count(chr(10))} items)")
        return 0
    old = API_FILE.read_text() if API_FILE.exists() else ""
    if old == text:
        print(f"public API unchanged ({text.count(chr(10))} items in {API_FILE.relative_to(ROOT)})")
        return 0
    import difflib
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(API_FILE.relative_to(ROOT)), "the code"))
    print(
        "\nThe public API differs from api/kinesis-client.txt (above: '-' is the file, '+' the code).\n"
        "If the change is intended, run .ci/public-api.py --write and commit the file (and say in\n"
        "CHANGELOG.md what changed for users).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
