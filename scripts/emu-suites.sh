# Sourced by emu-asan.sh and emu-racecheck.sh: the emulator test suites, every
# tests/<crate>/emu_*.rs module, as cargo arguments: `crates` (--test <crate> ...) and
# `filters` (one `emu_x::` per module).
crates=() filters=()
for f in tests/*/emu_*.rs; do
  c="$(basename "$(dirname "$f")")"
  [[ " ${crates[*]} " == *" --test $c "* ]] || crates+=(--test "$c")
  filters+=("$(basename "$f" .rs)::")
done
