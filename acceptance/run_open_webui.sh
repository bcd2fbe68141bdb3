#!/usr/bin/env bash
# Open WebUI 0.12.4 in Debian's Chromium against a fresh rkollama: the browser acceptance check
# (acceptance/open_webui.py). Outside CI: it installs Open WebUI and the CPU build of torch
# (several GB, in ~/.cache/rkollama/open-webui) and takes several minutes.
#
#   ./install.sh && acceptance/run_open_webui.sh          # needs root for apt (chromium)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OPEN_WEBUI_VENV:-$HOME/.cache/rkollama/open-webui}"
work="$(mktemp -d /tmp/rkollama-webui.XXXXXX)"
rk_port=11434 webui_port=8080

command -v chromium >/dev/null || apt-get install -y -q chromium
if [ ! -x "$venv/bin/open-webui" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0         # the CPU build (a plain torch pulls CUDA)
  "$venv/bin/pip" install -q open-webui==0.12.4 playwright
fi

cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
pids=()
trap cleanup EXIT
export RKOLLAMA_MODELS="$work/models" OLLAMA_HOST="127.0.0.1:$rk_port"
"$here/.venv/bin/rkollama" serve > "$work/rkollama.log" 2>&1 &
pids+=($!)
sleep 3
# The image step's vision model: the tests' generated tiny one (random weights, a real projector).
# Made before SmolLM2 is pulled, so that SmolLM2, the newest model, is Open WebUI's default.
"$here/.venv/bin/python" "$here/tests/tiny_vlm.py" "$work/vlm" >/dev/null
# Open WebUI sends tools with every chat: a template that renders them gives the model `tools`
# (first, so that a window too small for them all cuts them rather than the message and picture).
cat > "$work/vlm/Modelfile" <<MODELFILE
FROM $work/vlm/tiny-vlm.gguf
FROM $work/vlm/tiny-vlm-mmproj.gguf
TEMPLATE """{% if tools %}<|im_start|>system
Tools: {{ tools | tojson }}<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
MODELFILE
"$here/.venv/bin/rkollama" create tiny-vlm -f "$work/vlm/Modelfile"
"$here/.venv/bin/python" -c "from PIL import Image; Image.new('RGB', (64, 48), (200, 30, 30)).save('$work/vlm/red.png')"
sleep 1
"$here/.venv/bin/rkollama" pull smollm2:135m
# Open WebUI with its default settings, but offline: no hub downloads (its RAG embedder is not
# used by chat) and no OpenAI connection.
# (Run from $work: Open WebUI writes its .webui_secret_key into the current directory.)
(cd "$work" && DATA_DIR="$work/webui" WEBUI_AUTH=False OLLAMA_BASE_URL="http://127.0.0.1:$rk_port" \
  OFFLINE_MODE=True HF_HUB_OFFLINE=1 ENABLE_OPENAI_API=False \
  exec "$venv/bin/open-webui" serve --port "$webui_port") > "$work/webui.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do curl -fs -o /dev/null "http://127.0.0.1:$webui_port/" && break; sleep 2; done
status=0
"$venv/bin/python" "$here/acceptance/open_webui.py" --webui "http://127.0.0.1:$webui_port" \
  --rkollama "http://127.0.0.1:$rk_port" --screenshots "$work" \
  --vision-model tiny-vlm:latest --picture "$work/vlm/red.png" --rkollama-log "$work/rkollama.log" || status=$?
echo "logs and screenshots: $work"
exit "$status"
