# shellcheck shell=bash
# cuBLAS for the loader, written once: sourced by scripts/gpu-bench.sh and (copied into the
# bundle) by the run.sh of scripts/gpu-tests.sh.
#
#   source scripts/cuda-libs.sh && quadra_cuda_libs    # returns 1 when none was found
#
# The CUDA runtime (src/device/cuda/) dlopens libcublas.so.13 or .so.12, and a real
# libcublas needs libcublasLt of the same version. When the loader does not find them
# (LD_LIBRARY_PATH, then the ldconfig cache), this looks in a CUDA toolkit
# (/usr/local/cuda*/lib64, targets/*/lib) and in the pip wheels of the Python that PYTHON
# names (default python3): nvidia/cu13/lib, nvidia/cublas/lib (also PyTorch's dependencies)
# and torch/lib, and prepends the first folder holding both libraries (13 before 12) to
# LD_LIBRARY_PATH. Prints one line saying where cuBLAS and cuBLASLt come from.

# The libcublas.so.1X that the loader finds as things stand ("" when none): the folders of
# LD_LIBRARY_PATH first, then the ldconfig cache.
_quadra_cublas_on_path() {
  local d v dirs=()
  IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
  for v in 13 12; do
    for d in ${dirs[@]+"${dirs[@]}"}; do
      [[ -n "$d" && -e "$d/libcublas.so.$v" ]] && { echo "$d/libcublas.so.$v"; return 0; }
    done
    d="$(ldconfig -p 2>/dev/null | sed -n "s/^[[:space:]]*libcublas\.so\.$v .*=> //p" | head -n 1)"
    [[ -n "$d" ]] && { echo "$d"; return 0; }
  done
  return 1
}

# "OK PATH" when the library's libcublasLt dependency resolves (PATH: where), "NONE" when it
# has none (the stand-in of cuda/standin/), "MISSING NAME" when the loader cannot find it.
_quadra_cublaslt_of() {
  local line
  line="$(ldd "$1" 2>/dev/null | grep 'libcublasLt' | head -n 1)"
  if [[ -z "$line" ]]; then
    echo NONE
  elif [[ "$line" == *"not found"* ]]; then
    echo "MISSING $(awk '{print $1}' <<<"$line")"
  else
    echo "OK $(sed 's/.*=> *//; s/ (0x.*//' <<<"$line")"
  fi
}

# Folders that may hold cuBLAS, in the order they are tried.
_quadra_cublas_candidates() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda/targets/*/lib \
    /usr/local/cuda-*/targets/*/lib; do
    [[ -d "$d" ]] && echo "$d"
  done
  "${PYTHON:-python3}" - 2>/dev/null <<'PY'
import os, site, sys
roots = []
try:
    roots += site.getsitepackages()
except AttributeError:
    pass
try:
    roots.append(site.getusersitepackages())
except AttributeError:
    pass
roots += [p for p in sys.path if p.endswith("-packages")]
seen = set()
for r in roots:
    for sub in ("nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib", "torch/lib"):
        d = os.path.realpath(os.path.join(r, sub))
        if d not in seen and os.path.isdir(d):
            seen.add(d)
            print(d)
PY
}

quadra_cuda_libs() {
  local lib lt d v searched=()
  if lib="$(_quadra_cublas_on_path)"; then
    lt="$(_quadra_cublaslt_of "$lib")"
    case "$lt" in
      NONE) echo "cuBLAS: $lib (on the loader path; it needs no libcublasLt)"; return 0 ;;
      OK*) echo "cuBLAS: $lib, cuBLASLt: ${lt#OK } (on the loader path)"; return 0 ;;
      *) echo "cuBLAS: $lib is on the loader path but its ${lt#MISSING } is not: searching for a folder holding both" ;;
    esac
  fi
  while IFS= read -r d; do
    searched+=("$d")
    for v in 13 12; do
      if [[ -e "$d/libcublas.so.$v" && -e "$d/libcublasLt.so.$v" ]]; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "cuBLAS: $d/libcublas.so.$v, cuBLASLt: $d/libcublasLt.so.$v (added to LD_LIBRARY_PATH)"
        return 0
      fi
    done
  done < <(_quadra_cublas_candidates)
  echo "cuBLAS: libcublas.so.13/.12 with its libcublasLt not found on the loader path nor in: ${searched[*]:-(no candidate folder exists)}; cuda:0 will report cuBLAS missing"
  return 1
}
