#!/usr/bin/env bash
# Build the one-folder desktop app (dist/MedEdgeViewer/) with PyInstaller, then smoke-test the BUILT app:
# it must decode the real radiographs, render an analysed study offscreen, and run on a real X server (Xvfb,
# Qt's xcb platform: studies opened, Analyze clicked, findings on screen). Run by `make package`.
#
#   SMOKE_DATA=DIR   real radiographs (default ../shared/data/cxr beside the checkout)
#   SMOKE=0          build only
set -euo pipefail

PYINSTALLER_VERSION=6.22.3           # supports Python 3.8-3.14; bump together with the hooks below
HOOKS_CONTRIB_VERSION=2026.9

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "build.sh: $PY not found — run 'make package' (it creates .venv)" >&2; exit 1; }

if [ "$("$PY" -m PyInstaller --version 2>/dev/null)" != "$PYINSTALLER_VERSION" ]; then
    echo "installing pyinstaller==$PYINSTALLER_VERSION into $(dirname "$(dirname "$PY")")"
    "$PY" -m pip install --quiet "pyinstaller==$PYINSTALLER_VERSION" \
        "pyinstaller-hooks-contrib==$HOOKS_CONTRIB_VERSION"
fi

APP=dist/MedEdgeViewer
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/desktop/mededge.spec
build_s=$(( $(date +%s) - start ))
[ -x "$APP/MedEdgeViewer" ] || { echo "build.sh: $APP/MedEdgeViewer was not built" >&2; exit 1; }

# The bundle must carry every DICOM decoder the loader relies on, and no edge server.
for needed in inference/resources/models/models.yaml '_openjpeg.*.so' '_libjpeg.*.so' 'rle/*.so' '_CharLS.*.so' \
              '_gdcm/_gdcmswig.so' _gdcm/XML/Part3.xml 'pylibjpeg_openjpeg-*.dist-info/entry_points.txt' \
              'torch/lib/libtorch_cpu.so' 'onnxruntime/capi/onnxruntime_pybind11_state.*.so' \
              'PySide6/Qt/plugins/platforms/libqxcb.so' 'PySide6/Qt/plugins/platforms/libqoffscreen.so'; do
    compgen -G "$APP/_internal/$needed" >/dev/null || { echo "build.sh: the bundle lacks $needed" >&2; exit 1; }
done
if [ -e "$APP/_internal/pytriton" ]; then echo "build.sh: nvidia-pytriton must not be in the desktop bundle" >&2; exit 1; fi

echo "built $APP in ${build_s} s; size $(du -sh "$APP" | cut -f1)"
[ "${SMOKE:-1}" = 0 ] && exit 0

# ---- smoke test of the built app, with a fresh data folder (demo weights made on first run) and settings
DATA=${SMOKE_DATA:-$ROOT/../shared/data/cxr}
STUDY=$DATA/dicom/DX_chest_966_fixed.dcm   # DX chest PA, JPEG 2000 lossless, MONOCHROME1
[ -f "$STUDY" ] || { echo "build.sh: no smoke-test radiograph at $STUDY (set SMOKE_DATA, or SMOKE=0)" >&2; exit 1; }
SMOKE_DIR=build/smoke
rm -rf "$SMOKE_DIR" && mkdir -p "$SMOKE_DIR"
FRESH=$(mktemp -d)
trap 'rm -rf "$FRESH"' EXIT
export QT_QPA_PLATFORM=offscreen MEDEDGE_DATA_DIR="$FRESH/data" XDG_CONFIG_HOME="$FRESH/config"

# 1. the loader in the bundle: JPEG 2000 (lossless, lossy), JPEG Lossless, RLE, native, no-File-Meta DICOM
"$APP/MedEdgeViewer" inspect "$DATA/dicom/CR-MONO1-10-chest" "$STUDY" "$DATA/dicom/RG1_J2KI.dcm" \
    "$DATA/dicom/highdicom_dx_image_canine_thorax.dcm" "$DATA/other/RG2_JPLL.dcm" "$DATA/other/RG2_RLE.dcm" \
    > "$SMOKE_DIR/inspect.jsonl" || { cat "$SMOKE_DIR/inspect.jsonl"; echo "smoke: inspect failed" >&2; exit 1; }
echo "smoke: inspect decoded $(wc -l < "$SMOKE_DIR/inspect.jsonl") files"

# 2. ONNX export + onnxruntime INT8 quantisation (the local runtimes other than PyTorch), on the classifier
"$APP/MedEdgeViewer" models quantize --runtime onnxruntime-int8-dynamic --models classifier \
    > "$SMOKE_DIR/quantize.jsonl" 2> "$SMOKE_DIR/quantize.log" \
    || { tail -20 "$SMOKE_DIR/quantize.log"; echo "smoke: models quantize failed" >&2; exit 1; }
echo "smoke: onnxruntime INT8: $(cut -c1-160 "$SMOKE_DIR/quantize.jsonl")"

# 3. the viewer: open, analyse (demo weights, local), render 1440x900 offscreen
start=$(date +%s)
"$APP/MedEdgeViewer" --screenshot "$SMOKE_DIR/screenshot.png" "$STUDY" 2> "$SMOKE_DIR/screenshot.log" \
    || { grep -v propagateSizeHints "$SMOKE_DIR/screenshot.log" | tail -20; echo "smoke: --screenshot failed" >&2; exit 1; }
echo "smoke: screenshot in $(( $(date +%s) - start )) s"
"$PY" - "$SMOKE_DIR/screenshot.png" <<'EOF'
import os, sys
from PIL import Image
path = sys.argv[1]
size = os.path.getsize(path)
image = Image.open(path).convert("RGB")
colours = image.getcolors(maxcolors=1 << 20)
distinct = len(colours) if colours is not None else 1 << 20
problems = []
if image.size != (1440, 900):
    problems.append(f"size {image.size}, expected (1440, 900)")
if size <= 50_000:
    problems.append(f"only {size} bytes")
if distinct < 256:
    problems.append(f"only {distinct} colours")
if problems:
    sys.exit(f"smoke: bad screenshot {path}: " + "; ".join(problems))
print(f"smoke: {path} ok ({image.size[0]}x{image.size[1]}, {size // 1024} KiB, {distinct} colours)")
EOF
for weights in "$MEDEDGE_DATA_DIR"/weights/*.pt; do echo "smoke: demo weights generated: ${weights##*/}"; done

# 4. the viewer as a user starts it on a desktop: X server (Xvfb 1366x768), xcb platform, three studies at once,
#    Analyze clicked with xdotool, the findings read back from the screen with xwd (tests/x11.py)
(unset QT_QPA_PLATFORM; "$PY" tests/x11.py "$SMOKE_DIR/x11" "$APP/MedEdgeViewer" -- "$STUDY" \
    "$DATA/dicom/CR-MONO1-10-chest" "$DATA/raster/txv_nih_00027426_000_512px.png") \
    || { echo "smoke: the bundle on a real X server failed (screenshots in $SMOKE_DIR/x11)" >&2; exit 1; }

# 5. the system libraries the bundle takes from the machine (packaging/README.md lists them)
"$PY" packaging/qt_libraries.py --bundle "$APP/_internal/PySide6" > "$SMOKE_DIR/system-libraries.tsv" \
    || { cat "$SMOKE_DIR/system-libraries.tsv"; echo "smoke: a library the bundle needs is missing" >&2; exit 1; }
echo "smoke: the bundle's Qt needs $(wc -l < "$SMOKE_DIR/system-libraries.tsv") system libraries from" \
     "$(cut -f2 "$SMOKE_DIR/system-libraries.tsv" | sort -u | wc -l) packages: $SMOKE_DIR/system-libraries.tsv"
echo "package: $APP ($(du -sh "$APP" | cut -f1)), built in ${build_s} s, smoke test passed"
