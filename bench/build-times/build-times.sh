#!/usr/bin/env bash
# Cold build times, before vs after, on this machine in one run (README, "Dependencies and
# build footprint"). Each build starts from an empty target/ with the registry already fetched
# (cargo fetch, not timed); nothing else should run meanwhile.
#
#   bench/build-times/build-times.sh BEFORE AFTER [OUT_DIR]
#   ONLY="b-after c-after" bench/build-times/build-times.sh ...   # only the named builds
#
# (a) a new binary crate that depends on kinesis-client (by path) and runs examples/minimal.rs,
#     with aws-config as a new user adds it; release build
# (b) the README's demo command, build only: cargo build --release -p demo (the demo's package;
#     before it had one, cargo build --release --example demo)
# (c) the README's test command, build only: cargo test --workspace --no-run
# (lib-debug, c-lib) the library alone in debug, and its unit tests alone: the part of (c) no test
#     command can leave out
# and the floor: a crate with only aws-config, aws-sdk-kinesis, aws-sdk-dynamodb and tokio
# (no kinesis-client), release and debug, and the same with ring as the crypto provider.
set -uo pipefail
BEFORE=${1:?before commit}
AFTER=${2:?after commit}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
M=${3:-$(mktemp -d /tmp/build-times.XXXX)}
mkdir -p "$M"
echo "results in $M/results.txt"

app() { # dir: a binary crate running examples/minimal.rs of the checkout ../<checkout>
  local v=$1
  mkdir -p "$M/$v-app/src"
  cp "$M/$v/examples/minimal.rs" "$M/$v-app/src/main.rs"
  cp "$M/$v/Cargo.lock" "$M/$v-app/Cargo.lock"
  cat > "$M/$v-app/Cargo.toml" <<TOML
[package]
name = "minimal-app"
version = "0.1.0"
edition = "2021"

[dependencies]
kinesis-client = { path = "../$v" }
aws-config = { version = "1", features = ["behavior-version-latest"] }
tokio = { version = "1", features = ["full"] }
async-trait = "0.1"

[workspace]
TOML
}

for v in before after; do
  c=$BEFORE; [ $v = after ] && c=$AFTER
  rm -rf "$M/$v"
  git -C "$REPO" worktree add -f --detach "$M/$v" "$c" >/dev/null
  app $v
  (cd "$M/$v-app" && cargo fetch -q); (cd "$M/$v" && cargo fetch -q)
done
for f in floor floor-ring; do
  mkdir -p "$M/$f/src"
  cp "$HERE/$f-Cargo.toml" "$M/$f/Cargo.toml"
  cp "$HERE/$f-main.rs" "$M/$f/src/main.rs"
  cp "$M/after/Cargo.lock" "$M/$f/Cargo.lock"
  (cd "$M/$f" && cargo fetch -q)
done

t() { # name dir cmd...
  local name=$1 dir=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  rm -rf "$dir/target"
  ( cd "$dir" && /usr/bin/time -f "%e s wall, %U s user, %S s sys" -o "$M/$name.time" "$@" ) > "$M/$name.log" 2>&1
  local rc=$?
  local units
  units=$(grep -c "^ *Compiling" "$M/$name.log")
  printf "%-16s rc=%s units=%-4s %s\n" "$name" $rc "$units" "$(tail -1 "$M/$name.time")" | tee -a "$M/results.txt"
  rm -rf "$dir/target"
}
echo "== $(date -u) before=$BEFORE after=$AFTER" >> "$M/results.txt"
for v in before after; do
  (cd "$M/$v-app" && echo "$v app: $(cargo tree -e normal --prefix none | sed 's/ (\*)//' | sort -u | wc -l) crates (normal)") >> "$M/results.txt"
done
t a-before "$M/before-app" cargo build --release
t a-after "$M/after-app" cargo build --release
demo() { # the demo build command of checkout $1
  if [ -f "$M/$1/demo/Cargo.toml" ]; then echo "-p demo"; else echo "--example demo"; fi
}
# shellcheck disable=SC2046
t b-before "$M/before" cargo build --release $(demo before)
# shellcheck disable=SC2046
t b-after "$M/after" cargo build --release $(demo after)
t c-before "$M/before" cargo test --workspace --no-run
t c-after "$M/after" cargo test --workspace --no-run
# what no test command can avoid: the library's debug build, and the library's own unit tests
# (with their dev-dependencies), each alone
t lib-debug-after "$M/after" cargo build -p kinesis-client
t c-lib-after "$M/after" cargo test -p kinesis-client --lib --no-run
t floor-release "$M/floor" cargo build --release
t floor-debug "$M/floor" cargo build
t floor-ring "$M/floor-ring" cargo build --release
echo "== done $(date -u)" >> "$M/results.txt"
git -C "$REPO" worktree remove --force "$M/before"
git -C "$REPO" worktree remove --force "$M/after"
