/*
 * A test double of Rockchip's librkllmrt.so, for the ctypes binding's tests.
 *
 * Written from rkollama's fact sheet (no Rockchip file is copied). Build for ABI family 1.2
 * (runtime 1.2.1-1.2.3) by default, 1.3 (runtime 1.3.0) with -DRKLLM_ABI_13, or 1.3.1 (an audio
 * member closes RKLLMMultiModalInput) with -DRKLLM_ABI_13 -DRKLLM_ABI_131:
 *     cc -shared -fPIC -O1 -pthread [-DRKLLM_ABI_13 [-DRKLLM_ABI_131]] fake_rkllm.c -o librkllmrt.so
 *
 * Like the real library: rkllm_createDefaultParam writes its defaults into the caller's return
 * buffer field by field (other bytes stay as the caller left them) and points the 1.2 img_*
 * strings at ""; rkllm_init prints its version banner on stdout (C stdio, so buffered in a pipe)
 * and "E rkllm:" lines on failure. FAKE_RKLLM_INIT=crash aborts after the banner, =hang never
 * returns once the model file exists, =silent prints no banner, =sigill dies of SIGILL after
 * the banner, =nomem and =nodriver refuse with the runtime's words (no banner without a driver),
 * =fail returns -1 after the banner and says nothing more.
 *
 * Prompts come as text (RKLLM_INPUT_PROMPT) or as token ids (RKLLM_INPUT_TOKEN) of the tests'
 * byte-level tokenizer: ids 0-255 are bytes, 256.. the special tokens in SPECIALS below. With
 * tokens the double keeps a KV cache of ids (keep_history=1 appends; =0 starts again, or with
 * FAKE_RKLLM_REUSE=prefix reuses the common prefix), counts what it really prefills, looks for
 * the behaviours below in the whole context, echoes the last user turn one token per byte, and
 * emits canned answers one token per byte or special token.
 *
 * Switches for every runtime behaviour the public evidence leaves open (environment variables):
 *   FAKE_RKLLM_THINK_FINISH  never | enabled | always: FINISH when the model reaches </think>,
 *                            which is not passed on (1.3.x: "enabled" = when enable_thinking is set)
 *   FAKE_RKLLM_WAITING       partial | null | repeat: what a WAITING callback's text holds (the
 *                            partial bytes; NULL; the bytes so far, which the NORMAL repeats)
 *   FAKE_RKLLM_ABORT         zero | minus1 | error: after rkllm_abort, FINISH and rkllm_run = 0;
 *                            no FINISH and rkllm_run = -1; an ERROR callback
 *   FAKE_RKLLM_MAX_NEW       honour | ignore: whether the run stops at max_new_tokens by itself
 *   FAKE_RKLLM_KV_TAIL       evaluated | pending: whether the last generated token is in the cache
 *   FAKE_RKLLM_REUSE         none | prefix: keep_history=0 reuses the cached common prefix
 *   FAKE_RKLLM_CTX_LIMIT     N: the model's max_context_limit; a larger max_context_len is refused
 *                            with the runtime's words
 *   FAKE_RKLLM_MODEL         echo | smart: with token input, "smart" acts like a small chat model
 *                            for `doctor --npu-check`: it thinks when the prompt leaves thinking
 *                            open, calls the first tool offered, answers a tool result, and takes
 *                            2 ms per token
 *
 * Behaviour is chosen by the prompt (it answers on a thread of its own, like a runtime may):
 *   default        echo the prompt's words, one NORMAL callback per word, then FINISH + perf
 *   "__utf8__"     "héllo wörld €" with multibyte characters split across WAITING callbacks
 *   "__error__"    one NORMAL, then ERROR
 *   "__slow__"     200 words, 20 ms apart, stopping at the next word after rkllm_abort
 *   "__crash__"    abort() the process
 *   "__tool__"     a Qwen-style <tool_call> block
 *   "__think__"    a <think>...</think> block, then an answer
 * It records what it was given; fake_last_json() reports it, fake_layout_json() its own
 * sizeof/offsetof of every struct.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *LLMHandle;
typedef enum { RKLLM_RUN_NORMAL = 0, RKLLM_RUN_WAITING = 1, RKLLM_RUN_FINISH = 2, RKLLM_RUN_ERROR = 3 } LLMCallState;
typedef enum { RKLLM_INPUT_PROMPT = 0, RKLLM_INPUT_TOKEN = 1, RKLLM_INPUT_EMBED = 2, RKLLM_INPUT_MULTIMODAL = 3 } RKLLMInputType;

typedef struct {
    int32_t base_domain_id;
    int8_t embed_flash;
    int8_t enabled_cpus_num;
    uint32_t enabled_cpus_mask;
    uint8_t n_batch;
    int8_t use_cross_attn;
    uint8_t reserved[104];
} RKLLMExtendParam;

typedef struct {
    const char *model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    int32_t n_keep;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
    bool skip_special_token;
#ifdef RKLLM_ABI_13
    bool ignore_eos_token;
    bool is_async;
#else
    bool is_async;
    const char *img_start;
    const char *img_end;
    const char *img_content;
#endif
    RKLLMExtendParam extend_param;
} RKLLMParam;

typedef struct { const char *lora_adapter_path; const char *lora_adapter_name; float scale; } RKLLMLoraAdapter;
typedef struct { float *embed; size_t n_tokens; } RKLLMEmbedInput;
typedef struct { int32_t *input_ids; size_t n_tokens; } RKLLMTokenInput;

#ifdef RKLLM_ABI_13
typedef struct {
    const char *prompt;
    struct {
        float *image_embed; size_t n_image_tokens; size_t n_image;
        const char *image_start; const char *image_end; const char *image_content;
        size_t image_width; size_t image_height;
    } image;
    struct {
        float *video_embed; size_t n_frame_tokens; size_t n_frame_per_video; size_t n_video;
        const char *video_start; const char *video_end; const char *video_content;
        size_t frame_width; size_t frame_height;
    } video;
#ifdef RKLLM_ABI_131
    struct {
        float *audio_embed; size_t n_audio_tokens; size_t n_audio;
        const char *audio_start; const char *audio_end; const char *audio_content;
    } audio;
#endif
} RKLLMMultiModalInput;
#else
typedef struct {
    const char *prompt; float *image_embed; size_t n_image_tokens; size_t n_image;
    size_t image_width; size_t image_height;
} RKLLMMultiModalInput;
#endif

typedef struct {
    const char *role;
    bool enable_thinking;
    RKLLMInputType input_type;
    union {
        const char *prompt_input;
        RKLLMEmbedInput embed_input;
        RKLLMTokenInput token_input;
        RKLLMMultiModalInput multimodal_input;
    };
} RKLLMInput;

typedef struct { const char *lora_adapter_name; } RKLLMLoraParam;
typedef struct { int save_prompt_cache; const char *prompt_cache_path; } RKLLMPromptCacheParam;
typedef struct { float *encoder_k_cache; float *encoder_v_cache; float *encoder_mask; int32_t *encoder_pos; int num_tokens; } RKLLMCrossAttnParam;
typedef struct {
    int32_t top_k; float top_p; float temperature; float repeat_penalty; float frequency_penalty;
    float presence_penalty; int32_t mirostat; float mirostat_tau; float mirostat_eta;
} RKLLMSamplingParam;

typedef struct {
    int mode;
    RKLLMLoraParam *lora_params;
    RKLLMPromptCacheParam *prompt_cache_params;
#ifdef RKLLM_ABI_13
    RKLLMSamplingParam *sampling_params;
    int keep_history;
    int32_t max_new_tokens;
#else
    int keep_history;
#endif
} RKLLMInferParam;

typedef struct { const float *hidden_states; int embd_size; int num_tokens; } RKLLMResultLastHiddenLayer;
typedef struct { const float *logits; int vocab_size; int num_tokens; } RKLLMResultLogits;
typedef struct { float prefill_time_ms; int prefill_tokens; float generate_time_ms; int generate_tokens; float memory_usage_mb; } RKLLMPerfStat;
typedef struct {
    const char *text; int32_t token_id; RKLLMResultLastHiddenLayer last_hidden_layer;
    RKLLMResultLogits logits; RKLLMPerfStat perf;
} RKLLMResult;

typedef int (*LLMResultCallback)(RKLLMResult *result, void *userdata, LLMCallState state);
#ifdef RKLLM_ABI_13
typedef int (*LLMTokenizerCallback)(void *, const char *, int32_t, int32_t *, int32_t);
typedef int (*LLMGetEmbedCallback)(void *, int32_t *, uint64_t, void *, uint64_t);
typedef struct {
    LLMResultCallback result_callback; void *result_userdata;
    LLMTokenizerCallback tokenizer_callback; void *tokenizer_userdata;
    LLMGetEmbedCallback embed_callback; void *embed_userdata;
} RKLLMCallback;
#endif

const char *fake_last_json(void);

/* With FAKE_RKLLM_RECORD=<file>, the recorder is also written there after every recorded call,
   so tests can read it when the runtime lives in another process. */
static void persist(void) {
    const char *path = getenv("FAKE_RKLLM_RECORD");
    if (!path || !*path) return;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fputs(fake_last_json(), f);
    fclose(f);
    rename(tmp, path);
}

/* ---- the fake runtime ------------------------------------------------------------------- */
typedef struct {
    RKLLMParam param;
    char model_path[512];
    LLMResultCallback callback;
    void *default_userdata;
    volatile int abort_flag;
    volatile int running;
    int kv_tokens;               /* words "in the KV cache" when keep_history is used (text) */
    int32_t *cache;              /* token ids in the KV cache (token input) */
    size_t n_cache;
} FakeHandle;

#define CACHE_MAX 65536
static const char *SPECIALS[] = {"<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>",
                                 "</tool_call>", "<|endoftext|>"};
#define N_SPECIALS 7
#define THINK_CLOSE_ID 259

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}
static int env_is(const char *name, const char *value, const char *fallback) {
    return strcmp(env_or(name, fallback), value) == 0;
}

typedef struct {
    FakeHandle *h;
    RKLLMInput *inputs;
    RKLLMInferParam *infer;
    void *userdata;
    int n_batch;
    int rc;
} RunJob;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last[40000];
static char g_template[3][2048], g_tools[3][4096], g_prompt[4096], g_role[64], g_lora[256], g_cache_path[512];
static int g_enable_thinking = -1, g_keep_history = -1, g_clear_calls = 0, g_init_calls = 0, g_destroy_calls = 0;
static int g_abort_calls = 0, g_runs = 0, g_max_new_tokens_run = -99, g_input_type = -1, g_n_batch_run = 0;
static int g_sent_tokens = 0, g_prefilled = 0, g_think_finishes = 0;
static void *g_userdata = NULL;
static RKLLMParam g_param;
static RKLLMSamplingParam g_sampling;
static int g_have_sampling = 0;
static char g_loaded_lora[512], g_loaded_cache[512];
/* The last RKLLM_INPUT_MULTIMODAL run: its image counts, the image tags in force (1.2: from
   RKLLMParam at init; 1.3: in the input), and the sum of the embeddings it was given (each image
   FAKE_RKLLM_IMAGE_DIM floats per token, 8 by default, as the RKNN double makes them). */
static long g_n_image = -1, g_n_image_tokens = -1, g_image_width = -1, g_image_height = -1;
static double g_image_sum = 0.0;
static char g_image_tags[3][128];

static void copy_str(char *dst, size_t n, const char *src) { snprintf(dst, n, "%s", src ? src : "(null)"); }

static void json_escape(char *out, size_t n, const char *in) {
    size_t j = 0;
    for (size_t i = 0; in && in[i] && j + 7 < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '"' || c == '\\') { out[j++] = '\\'; out[j++] = c; }
        else if (c == '\n') { out[j++] = '\\'; out[j++] = 'n'; }
        else if (c < 0x20) { j += snprintf(out + j, n - j, "\\u%04x", c); }
        else out[j++] = c;
    }
    out[j] = 0;
}

/* Fields written one by one into the return buffer: reserved bytes and padding keep whatever
   the caller's buffer held, as with the real library. */
__attribute__((noinline)) static void write_defaults(RKLLMParam *p) {
    p->model_path = NULL;
    p->max_context_len = 512; p->max_new_tokens = -1; p->top_k = 40; p->n_keep = 0; p->top_p = 0.9f;
    p->temperature = 0.8f; p->repeat_penalty = 1.1f; p->frequency_penalty = 0.0f;
    p->presence_penalty = 0.0f; p->mirostat = 0; p->mirostat_tau = 5.0f; p->mirostat_eta = 0.1f;
    p->skip_special_token = false; p->is_async = false;
#ifdef RKLLM_ABI_13
    p->ignore_eos_token = false;
#else
    p->img_start = ""; p->img_end = ""; p->img_content = "";
#endif
    p->extend_param.base_domain_id = 0; p->extend_param.embed_flash = 0;
    p->extend_param.enabled_cpus_num = 4; p->extend_param.enabled_cpus_mask = 0;
    p->extend_param.n_batch = 1; p->extend_param.use_cross_attn = 0;
}

RKLLMParam rkllm_createDefaultParam(void) {
    RKLLMParam p;
    write_defaults(&p);
    return p;
}

static int reserved_nonzero(const RKLLMParam *p) {
    int n = 0;
    for (size_t i = 0; i < sizeof p->extend_param.reserved; i++) n += p->extend_param.reserved[i] != 0;
    return n;
}
static int g_reserved_nonzero = -1;

#ifdef RKLLM_ABI_13
int rkllm_init(LLMHandle *handle, RKLLMParam *param, RKLLMCallback *callback) {
    LLMResultCallback cb = callback ? callback->result_callback : NULL;
    void *ud = callback ? callback->result_userdata : NULL;
#else
int rkllm_init(LLMHandle *handle, RKLLMParam *param, LLMResultCallback callback) {
    LLMResultCallback cb = callback;
    void *ud = NULL;
#endif
    const char *mode = getenv("FAKE_RKLLM_INIT");
    if (mode && strcmp(mode, "nodriver") == 0) {  /* no NPU driver: the runtime prints no banner */
        printf("E RKNN: failed to open rknpu module, need to insmod rknpu dirver!\n");
        printf("E RKNN: failed to open rknn device!\n");
        printf("E rkllm: rkllm init failed\n");
        *handle = NULL;
        return -1;
    }
    if (!mode || strcmp(mode, "silent") != 0)  /* =silent: a build that prints no banner */
    printf("I rkllm: rkllm-runtime version: %s, rknpu driver version: 0.9.8, platform: RK3588\n",
           getenv("FAKE_RKLLM_VERSION") ? getenv("FAKE_RKLLM_VERSION") :  /* a release we do not know */
#if defined(RKLLM_ABI_131)
            "1.3.1"
#elif defined(RKLLM_ABI_13)
            "1.3.0"
#else
            "1.2.3"
#endif
    );
    if (mode && strcmp(mode, "crash") == 0) abort();  /* the buffered banner dies with us */
    if (mode && strcmp(mode, "sigill") == 0) raise(SIGILL);  /* a build using SVE on a CPU without */
    pthread_mutex_lock(&g_lock);
    g_init_calls++;
    g_param = *param;
    g_reserved_nonzero = reserved_nonzero(param);
    pthread_mutex_unlock(&g_lock);
    persist();
    if (!param->model_path || access(param->model_path, R_OK) != 0) {
        fprintf(stderr, "E rkllm: failed to open model file %s\n", param->model_path ? param->model_path : "(null)");
        *handle = NULL;
        return -1;
    }
    if (mode && strcmp(mode, "hang") == 0) for (;;) pause();  /* a model that never finishes loading */
    int limit = atoi(env_or("FAKE_RKLLM_CTX_LIMIT", "16384"));
    printf("I rkllm: loading rkllm model from %s\n", param->model_path);
    printf("I rkllm: rkllm-toolkit version: 1.2.1, max_context_limit: %d, npu_core_num: 3, "
           "target_platform: RK3588, model_dtype: W8A8\n", limit);
    if (param->max_context_len > limit) {
        printf("E rkllm: max_context[%d] must be less than the model's max_context_limit[%d]\n",
               param->max_context_len, limit);
        *handle = NULL;
        return -1;
    }
    if (mode && strcmp(mode, "nomem") == 0) {
        printf("E RKNN: failed to malloc npu memory, size: 268435456, flags: 0x2\n");
        printf("E rkllm: rkllm init failed\n");
        *handle = NULL;
        return -1;
    }
    if (mode && strcmp(mode, "fail") == 0) { *handle = NULL; return -1; }  /* a silent -1 */
    FakeHandle *h = calloc(1, sizeof *h);
    h->param = *param;
    copy_str(h->model_path, sizeof h->model_path, param->model_path);
    h->param.model_path = h->model_path;
    h->callback = cb;
    h->default_userdata = ud;
    *handle = h;
    return 0;
}

static int words_in(const char *s) {
    int n = 0, in = 0;
    for (; s && *s; s++) { if (*s == ' ' || *s == '\n') in = 0; else if (!in) { in = 1; n++; } }
    return n;
}

static int emit(FakeHandle *h, void *ud, const char *text, LLMCallState state, int token) {
    RKLLMResult r;
    memset(&r, 0, sizeof r);
    r.text = text;
    r.token_id = token;
    return h->callback(&r, ud, state);
}

static void finish(FakeHandle *h, void *ud, int prefill, int generated) {
    RKLLMResult r;
    memset(&r, 0, sizeof r);
    r.perf.prefill_tokens = prefill;
    r.perf.prefill_time_ms = 2.0f * prefill;
    r.perf.generate_tokens = generated;
    r.perf.generate_time_ms = 30.0f * generated;
    r.perf.memory_usage_mb = 512.0f;
    h->callback(&r, ud, RKLLM_RUN_FINISH);
}


/* ---- token-level emission, shared by both input kinds ------------------------------------ */
static int utf8_complete(const unsigned char *b, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = b[i];
        size_t need = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (i + need > len) return 0;
        i += need;
    }
    return 1;
}

typedef struct { char acc[512]; size_t n; } Waiting;

/* One generated token whose bytes are piece[0..n): WAITING while the bytes since the last NORMAL
   end inside a character, filled as FAKE_RKLLM_WAITING says; NORMAL when they are whole. */
static int emit_token(FakeHandle *h, void *ud, Waiting *w, const char *piece, size_t n, int id) {
    char joined[600], text[600];
    if (w->n + n >= sizeof joined) w->n = 0;
    memcpy(joined, w->acc, w->n);
    memcpy(joined + w->n, piece, n);
    size_t jn = w->n + n;
    const char *mode = env_or("FAKE_RKLLM_WAITING", "partial");
    int partial = strcmp(mode, "partial") == 0, null = strcmp(mode, "null") == 0;
    if (!utf8_complete((const unsigned char *)joined, jn)) {
        memcpy(w->acc, joined, jn);
        w->n = jn;
        if (null) return emit(h, ud, NULL, RKLLM_RUN_WAITING, id);
        size_t tn = partial ? n : jn;
        memcpy(text, partial ? piece : joined, tn);
        text[tn] = 0;
        return emit(h, ud, text, RKLLM_RUN_WAITING, id);
    }
    size_t tn = partial ? n : jn;
    memcpy(text, partial ? piece : joined, tn);
    text[tn] = 0;
    w->n = 0;
    return emit(h, ud, text, RKLLM_RUN_NORMAL, id);
}

/* The tests' byte-level vocabulary: the special token at s, or -1 (then one byte is one token). */
static int special_at(const char *s) {
    for (int i = 0; i < N_SPECIALS; i++)
        if (strncmp(s, SPECIALS[i], strlen(SPECIALS[i])) == 0) return 256 + i;
    return -1;
}

static size_t detokenize(const int32_t *ids, size_t n, char *out, size_t cap) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 16 < cap; i++) {
        int id = ids[i];
        if (id >= 0 && id < 256) out[j++] = (char)id;
        else if (id >= 256 && id < 256 + N_SPECIALS) j += (size_t)snprintf(out + j, cap - j, "%s", SPECIALS[id - 256]);
        else out[j++] = '?';
    }
    out[j] = 0;
    return j;
}

static int think_finish_applies(const RKLLMInput *input) {
    const char *mode = env_or("FAKE_RKLLM_THINK_FINISH", "never");
    return strcmp(mode, "always") == 0 || (strcmp(mode, "enabled") == 0 && input->enable_thinking);
}

/* How a run ends: FINISH with perf, or after an abort as FAKE_RKLLM_ABORT says. */
static void end_run(RunJob *job, void *ud, int prefill, int generated, int aborted) {
    FakeHandle *h = job->h;
    if (aborted && env_is("FAKE_RKLLM_ABORT", "minus1", "zero")) { job->rc = -1; return; }
    if (aborted && env_is("FAKE_RKLLM_ABORT", "error", "zero")) { emit(h, ud, NULL, RKLLM_RUN_ERROR, -1); return; }
    finish(h, ud, prefill, generated);
}

static int run_limit(RunJob *job) {
    FakeHandle *h = job->h;
    if (env_is("FAKE_RKLLM_MAX_NEW", "ignore", "honour")) return -1;
    return job->infer ?
#ifdef RKLLM_ABI_13
        (job->infer->max_new_tokens > 0 ? job->infer->max_new_tokens : h->param.max_new_tokens)
#else
        h->param.max_new_tokens
#endif
        : h->param.max_new_tokens;
}

/* Emit `answer` token by token (a special token whole, else one byte); stops at the limit, an
   abort, a pause, or </think> when the runtime would end there. Returns tokens emitted. */
static int emit_answer(RunJob *job, void *ud, const char *answer, int32_t *ids_out, int cap, int slow_ms) {
    FakeHandle *h = job->h;
    Waiting w = {{0}, 0};
    int limit = run_limit(job), generated = 0;
    for (const char *p = answer; *p;) {
        if (h->abort_flag) break;
        if (limit > 0 && generated >= limit) break;
        int id = special_at(p);
        size_t n = id >= 0 ? strlen(SPECIALS[id - 256]) : 1;
        if (id < 0) id = (unsigned char)*p;
        if (id == THINK_CLOSE_ID && think_finish_applies(&job->inputs[0])) {
            pthread_mutex_lock(&g_lock); g_think_finishes++; pthread_mutex_unlock(&g_lock);
            break;  /* FINISH at </think>, which is not passed on */
        }
        if (slow_ms > 0 && *p == ' ') usleep((useconds_t)slow_ms * 1000);
        if (slow_ms < 0) usleep((useconds_t)(-slow_ms) * 1000);  /* every token */
        int rc = emit_token(h, ud, &w, p, n, id);
        if (generated < cap) ids_out[generated] = id;
        generated++;
        p += n;
        if (rc == 1) break;
    }
    return generated;
}

static void cache_push(FakeHandle *h, const int32_t *ids, size_t n) {
    if (!h->cache) h->cache = calloc(CACHE_MAX, sizeof *h->cache);
    for (size_t i = 0; i < n && h->n_cache < CACHE_MAX; i++) h->cache[h->n_cache++] = ids[i];
}

static const char *THINK_ANSWER = "<think>\nLet me think.\n</think>\n\nThe answer is 42.";
static const char *TOOL_ANSWER = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

/* RKLLM_INPUT_TOKEN: the KV cache of ids, and answers read from the whole context. */
static void token_run(RunJob *job, void *ud) {
    FakeHandle *h = job->h;
    const RKLLMTokenInput *ti = &job->inputs[0].token_input;
    size_t n = ti->n_tokens;
    int keep = job->infer && job->infer->keep_history;
    int reuse = env_is("FAKE_RKLLM_REUSE", "prefix", "none");
    size_t common = 0;
    if (!keep) {
        if (reuse)
            while (common < h->n_cache && common < n && h->cache[common] == ti->input_ids[common]) common++;
        h->n_cache = common;
    }
    cache_push(h, ti->input_ids + common, n - common);
    int prefill = (int)(n - common);
    static char ctx[1 << 20], sent[8192];
    detokenize(h->cache, h->n_cache, ctx, sizeof ctx);
    detokenize(ti->input_ids, n, sent, sizeof sent);
    pthread_mutex_lock(&g_lock);
    copy_str(g_prompt, sizeof g_prompt, sent);
    g_sent_tokens = (int)n; g_prefilled = prefill;
    pthread_mutex_unlock(&g_lock);
    persist();
    if (strstr(ctx, "__crash__")) abort();
    if (strstr(ctx, "__error__")) {
        emit(h, ud, "partial", RKLLM_RUN_NORMAL, 'p');
        emit(h, ud, NULL, RKLLM_RUN_ERROR, -1);
        return;
    }
    const char *assistant = NULL;
    for (const char *q = strstr(ctx, "<|im_start|>assistant"); q; q = strstr(q + 1, "<|im_start|>assistant")) assistant = q;
    static char answer[8192];
    int slow = 0;
    const char *last_user = NULL;
    for (const char *q = strstr(ctx, "<|im_start|>user\n"); q; q = strstr(q + 1, "<|im_start|>user\n")) last_user = q;
    int smart = env_is("FAKE_RKLLM_MODEL", "smart", "echo");
    int thinking_open = assistant && !strstr(assistant, "</think>");
    if (smart && last_user && strstr(last_user, "<tool_response>"))
        snprintf(answer, sizeof answer, "It is clear and 21 degrees in Paris.");
    else if (smart && strstr(ctx, "# Tools") && !thinking_open) snprintf(answer, sizeof answer, "%s", TOOL_ANSWER);
    else if (smart && thinking_open)  /* multibyte characters, so WAITING callbacks happen */
        snprintf(answer, sizeof answer, "<think>\nSeventeen times three\xe2\x80\xa6 51.\n</think>\n\n51 \xe2\x9c\x93");
    else if (strstr(ctx, "__think__"))
        snprintf(answer, sizeof answer, "%s", assistant && strstr(assistant, "</think>") ? "The answer is 42." : THINK_ANSWER);
    else if (strstr(ctx, "__tool__")) snprintf(answer, sizeof answer, "%s", TOOL_ANSWER);
    else if (strstr(ctx, "__slow__")) {
        size_t j = 0;
        for (int i = 0; i < 200 && j + 8 < sizeof answer; i++) j += (size_t)snprintf(answer + j, sizeof answer - j, "w%d ", i);
        slow = 20;
    } else {  /* echo the last user turn (or the raw prompt) */
        const char *user = NULL;
        for (const char *q = strstr(ctx, "<|im_start|>user\n"); q; q = strstr(q + 1, "<|im_start|>user\n")) user = q;
        const char *from = user ? user + strlen("<|im_start|>user\n") : sent;
        size_t len = user ? strcspn(from, "<") : strlen(from);
        snprintf(answer, sizeof answer, "%.*s", (int)len, from);
    }
    static int32_t out[8192];
    int generated = emit_answer(job, ud, answer, out, 8192, slow ? slow : smart ? -2 : 0);
    int stored = generated < 8192 ? generated : 8192;
    if (stored && env_is("FAKE_RKLLM_KV_TAIL", "pending", "evaluated")) stored--;
    cache_push(h, out, (size_t)stored);
    if (!keep && !reuse) h->n_cache = 0;
    end_run(job, ud, prefill, generated, h->abort_flag);
}

static void *run_thread(void *arg) {
    RunJob *job = arg;
    FakeHandle *h = job->h;
    void *ud = job->userdata ? job->userdata : h->default_userdata;
    int multimodal = job->inputs[0].input_type == RKLLM_INPUT_MULTIMODAL;
    const char *prompt = job->inputs[0].input_type == RKLLM_INPUT_PROMPT ? job->inputs[0].prompt_input
                         : multimodal ? job->inputs[0].multimodal_input.prompt : "";
    int words = words_in(prompt);
    int prefill = words;
    if (multimodal) prefill += (int)(g_n_image * g_n_image_tokens);  /* each image's embeddings are read */
    if (job->infer && job->infer->keep_history) { h->kv_tokens += words; } else { h->kv_tokens = 0; }
    int generated = 0;
    if (job->n_batch > 1) {
        /* one step per word of the longest prompt; each result slot of the array has its batch's word */
        RKLLMResult *rs = calloc((size_t)job->n_batch, sizeof *rs);
        char bufs[8][64];
        for (int step = 0; step < 3; step++) {
            for (int b = 0; b < job->n_batch && b < 8; b++) {
                snprintf(bufs[b], sizeof bufs[b], "b%d-%d ", b, step);
                rs[b].text = (step < b + 1) ? bufs[b] : NULL;
                rs[b].token_id = (step < b + 1) ? 100 + step : -1;
            }
            h->callback(rs, ud, RKLLM_RUN_NORMAL);
            generated++;
        }
        memset(rs, 0, sizeof *rs * (size_t)job->n_batch);
        rs[0].perf.prefill_tokens = prefill; rs[0].perf.generate_tokens = generated;
        h->callback(rs, ud, RKLLM_RUN_FINISH);
        free(rs);
        return NULL;
    }
    if (job->inputs[0].input_type == RKLLM_INPUT_TOKEN && !(job->infer && job->infer->mode == 1)) {
        token_run(job, ud);
        return NULL;
    }
    if (strstr(prompt, "__crash__")) { abort(); }
    if (job->infer && job->infer->mode == 1) {  /* RKLLM_INFER_GET_LAST_HIDDEN_LAYER */
        /* 8 values per token: token index, word length, then constants; one NORMAL, then FINISH */
        int n = words > 0 ? words : 1;
        float *hidden = calloc((size_t)n * 8, sizeof *hidden);
        const char *q = prompt;
        for (int t = 0; t < n; t++) {
            while (*q == ' ' || *q == '\n') q++;
            size_t len = strcspn(q, " \n");
            q += len;
            hidden[t * 8 + 0] = (float)t;
            hidden[t * 8 + 1] = (float)len;
            for (int k = 2; k < 8; k++) hidden[t * 8 + k] = 1.0f;
        }
        RKLLMResult r;
        memset(&r, 0, sizeof r);
        r.last_hidden_layer.hidden_states = hidden;
        r.last_hidden_layer.embd_size = 8;
        r.last_hidden_layer.num_tokens = n;
        h->callback(&r, ud, RKLLM_RUN_NORMAL);
        free(hidden);  /* only valid during the callback, as the runtime documents */
        finish(h, ud, prefill, 0);
        return NULL;
    }
    if (strstr(prompt, "__error__")) {
        emit(h, ud, "partial", RKLLM_RUN_NORMAL, 1);
        emit(h, ud, NULL, RKLLM_RUN_ERROR, -1);
        return NULL;
    }
    if (strstr(prompt, "__utf8__")) {
        /* "héllo wörld €": é = c3 a9, ö = c3 b6, € = e2 82 ac, each split across tokens */
        const char *pieces[] = {"h", "\xc3", "\xa9llo", " w", "\xc3", "\xb6rld ", "\xe2", "\x82", "\xac"};
        Waiting w = {{0}, 0};
        for (int i = 0; i < 9; i++) { emit_token(h, ud, &w, pieces[i], strlen(pieces[i]), 10 + i); generated++; }
        finish(h, ud, prefill, generated);
        return NULL;
    }
    const char *canned = NULL;
    if (strstr(prompt, "__tool__")) canned = TOOL_ANSWER;
    if (strstr(prompt, "__think__")) canned = THINK_ANSWER;
    if (canned) {
        int32_t ids[512];
        generated = emit_answer(job, ud, canned, ids, 512, 0);
        end_run(job, ud, prefill, generated, h->abort_flag);
        return NULL;
    }
    int slow = strstr(prompt, "__slow__") != NULL;
    int limit = run_limit(job);
    char word[256];
    const char *p = prompt;
    int total = slow ? 200 : words;
    for (int i = 0; i < total; i++) {
        if (h->abort_flag) break;
        if (limit > 0 && generated >= limit) break;
        if (slow) { snprintf(word, sizeof word, "w%d ", i); usleep(20000); }
        else {
            while (*p == ' ' || *p == '\n') p++;
            size_t n = strcspn(p, " \n");
            snprintf(word, sizeof word, "%s%.*s", i ? " " : "", (int)n, p);
            p += n;
        }
        int rc = emit(h, ud, word, RKLLM_RUN_NORMAL, 1000 + i);
        generated++;
        if (rc == 1) break;  /* pause requested */
    }
    if (job->infer && job->infer->keep_history) h->kv_tokens += generated;
    end_run(job, ud, prefill, generated, h->abort_flag);
    return NULL;
}

static void record_images(FakeHandle *h, RKLLMMultiModalInput *m) {
    copy_str(g_prompt, sizeof g_prompt, m->prompt);
    const char *dim_env = getenv("FAKE_RKLLM_IMAGE_DIM");
    long dim = dim_env ? atol(dim_env) : 8;
#ifdef RKLLM_ABI_13
    float *embed = m->image.image_embed;
    g_n_image = (long)m->image.n_image; g_n_image_tokens = (long)m->image.n_image_tokens;
    g_image_width = (long)m->image.image_width; g_image_height = (long)m->image.image_height;
    copy_str(g_image_tags[0], sizeof g_image_tags[0], m->image.image_start);
    copy_str(g_image_tags[1], sizeof g_image_tags[1], m->image.image_end);
    copy_str(g_image_tags[2], sizeof g_image_tags[2], m->image.image_content);
    (void)h;
#else
    float *embed = m->image_embed;
    g_n_image = (long)m->n_image; g_n_image_tokens = (long)m->n_image_tokens;
    g_image_width = (long)m->image_width; g_image_height = (long)m->image_height;
    copy_str(g_image_tags[0], sizeof g_image_tags[0], h->param.img_start);
    copy_str(g_image_tags[1], sizeof g_image_tags[1], h->param.img_end);
    copy_str(g_image_tags[2], sizeof g_image_tags[2], h->param.img_content);
#endif
    g_image_sum = 0.0;
    for (long i = 0; embed && i < g_n_image * g_n_image_tokens * dim; i++) g_image_sum += embed[i];
}

static void record_run(FakeHandle *h, RKLLMInput *input, RKLLMInferParam *infer, void *userdata) {
    pthread_mutex_lock(&g_lock);
    g_runs++;
    g_userdata = userdata;
    copy_str(g_role, sizeof g_role, input->role);
    g_enable_thinking = input->enable_thinking;
    g_input_type = input->input_type;
    copy_str(g_prompt, sizeof g_prompt, input->input_type == RKLLM_INPUT_PROMPT ? input->prompt_input : "");
    if (input->input_type == RKLLM_INPUT_MULTIMODAL) record_images(h, &input->multimodal_input);
    g_keep_history = infer ? infer->keep_history : -1;
    copy_str(g_lora, sizeof g_lora, infer && infer->lora_params ? infer->lora_params->lora_adapter_name : NULL);
    copy_str(g_cache_path, sizeof g_cache_path, infer && infer->prompt_cache_params ? infer->prompt_cache_params->prompt_cache_path : NULL);
#ifdef RKLLM_ABI_13
    g_max_new_tokens_run = infer ? infer->max_new_tokens : -99;
    g_have_sampling = infer && infer->sampling_params;
    if (g_have_sampling) g_sampling = *infer->sampling_params;
#endif
    g_n_batch_run = h->param.extend_param.n_batch;
    pthread_mutex_unlock(&g_lock);
    persist();
}

int rkllm_run(LLMHandle handle, RKLLMInput *input, RKLLMInferParam *infer_params, void *userdata) {
    FakeHandle *h = handle;
    if (!h || !input || !h->callback) return -1;
    record_run(h, input, infer_params, userdata);
    /* FAKE_RKLLM_RUN_HANG=FILE: while FILE exists, a run never calls back and never returns (a
       wedged NPU); an abort does not end it either. */
    const char *hang = getenv("FAKE_RKLLM_RUN_HANG");
    if (hang && *hang && access(hang, F_OK) == 0) {
        for (;;) sleep(1);
    }
    RunJob job = {h, input, infer_params, userdata, h->param.extend_param.n_batch > 1 ? h->param.extend_param.n_batch : 1, 0};
    h->abort_flag = 0;
    h->running = 1;
    pthread_t t;
    pthread_create(&t, NULL, run_thread, &job);   /* callbacks come from another thread */
    pthread_join(t, NULL);
    h->running = 0;
    return job.rc;
}

int rkllm_run_async(LLMHandle handle, RKLLMInput *input, RKLLMInferParam *infer_params, void *userdata) {
    return rkllm_run(handle, input, infer_params, userdata);
}

int rkllm_abort(LLMHandle handle) {
    FakeHandle *h = handle;
    if (!h) return -1;
    pthread_mutex_lock(&g_lock); g_abort_calls++; pthread_mutex_unlock(&g_lock);
    persist();
    h->abort_flag = 1;
    return 0;
}

int rkllm_is_running(LLMHandle handle) { FakeHandle *h = handle; return h && h->running ? 1 : 0; }

int rkllm_destroy(LLMHandle handle) {
    pthread_mutex_lock(&g_lock); g_destroy_calls++; pthread_mutex_unlock(&g_lock);
    persist();
    if (handle) free(((FakeHandle *)handle)->cache);
    free(handle);
    return 0;
}

int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int *start_pos, int *end_pos) {
    FakeHandle *h = handle;
    (void)keep_system_prompt;
    if (start_pos || end_pos) return -1;  /* ranges are only valid when paused; the binding passes NULL */
    pthread_mutex_lock(&g_lock); g_clear_calls++; pthread_mutex_unlock(&g_lock);
    persist();
    if (h) { h->kv_tokens = 0; h->n_cache = 0; }
    return 0;
}

int rkllm_get_kv_cache_size(LLMHandle handle, int *cache_sizes) {
    FakeHandle *h = handle;
    if (!h || !cache_sizes) return -1;
    for (int b = 0; b < (h->param.extend_param.n_batch > 0 ? h->param.extend_param.n_batch : 1); b++)
        cache_sizes[b] = h->kv_tokens + (int)h->n_cache;
    return 0;
}

int rkllm_set_chat_template(LLMHandle handle, const char *system_prompt, const char *prompt_prefix, const char *prompt_postfix) {
    (void)handle;
    pthread_mutex_lock(&g_lock);
    copy_str(g_template[0], sizeof g_template[0], system_prompt);
    copy_str(g_template[1], sizeof g_template[1], prompt_prefix);
    copy_str(g_template[2], sizeof g_template[2], prompt_postfix);
    pthread_mutex_unlock(&g_lock);
    persist();
    return 0;
}

int rkllm_set_function_tools(LLMHandle handle, const char *system_prompt, const char *tools, const char *tool_response_str) {
    (void)handle;
    pthread_mutex_lock(&g_lock);
    copy_str(g_tools[0], sizeof g_tools[0], system_prompt);
    copy_str(g_tools[1], sizeof g_tools[1], tools);
    copy_str(g_tools[2], sizeof g_tools[2], tool_response_str);
    pthread_mutex_unlock(&g_lock);
    persist();
    return 0;
}

int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter *adapter) {
    (void)handle;
    if (!adapter || !adapter->lora_adapter_path || access(adapter->lora_adapter_path, R_OK) != 0) return -1;
    pthread_mutex_lock(&g_lock);
    snprintf(g_loaded_lora, sizeof g_loaded_lora, "%s@%s*%.2f", adapter->lora_adapter_name, adapter->lora_adapter_path, adapter->scale);
    pthread_mutex_unlock(&g_lock);
    persist();
    return 0;
}
int rkllm_load_prompt_cache(LLMHandle handle, const char *path) {
    (void)handle;
    if (!path || access(path, R_OK) != 0) return -1;
    pthread_mutex_lock(&g_lock); copy_str(g_loaded_cache, sizeof g_loaded_cache, path); pthread_mutex_unlock(&g_lock);
    persist();
    return 0;
}
int rkllm_release_prompt_cache(LLMHandle handle) { (void)handle; return 0; }
int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam *p) { (void)handle; return p ? 0 : -1; }

/* ---- test hooks (not part of the runtime's API) ------------------------------------------ */
const char *fake_last_json(void) {
    char e[8][4200];
    pthread_mutex_lock(&g_lock);
    json_escape(e[0], sizeof e[0], g_template[0]); json_escape(e[1], sizeof e[1], g_template[1]);
    json_escape(e[2], sizeof e[2], g_template[2]); json_escape(e[3], sizeof e[3], g_tools[0]);
    json_escape(e[4], sizeof e[4], g_tools[1]); json_escape(e[5], sizeof e[5], g_tools[2]);
    json_escape(e[6], sizeof e[6], g_prompt); json_escape(e[7], sizeof e[7], g_role);
    snprintf(g_last, sizeof g_last,
        "{\"template\": [\"%s\", \"%s\", \"%s\"], \"tools\": [\"%s\", \"%s\", \"%s\"], \"prompt\": \"%s\", "
        "\"role\": \"%s\", \"enable_thinking\": %d, \"keep_history\": %d, \"runs\": %d, \"inits\": %d, "
        "\"destroys\": %d, \"aborts\": %d, \"clears\": %d, \"input_type\": %d, \"userdata\": %llu, "
        "\"max_new_tokens_run\": %d, \"lora\": \"%s\", \"prompt_cache\": \"%s\", \"n_batch\": %d, "
        "\"loaded_lora\": \"%s\", \"loaded_prompt_cache\": \"%s\", \"reserved_nonzero\": %d, "
        "\"sent_tokens\": %d, \"prefilled\": %d, \"think_finishes\": %d, "
        "\"images\": {\"n_image\": %ld, \"n_image_tokens\": %ld, \"width\": %ld, \"height\": %ld, "
        "\"sum\": %.4f, \"start\": \"%s\", \"end\": \"%s\", \"content\": \"%s\"}, "
        "\"param\": {\"max_context_len\": %d, \"max_new_tokens\": %d, \"top_k\": %d, \"n_keep\": %d, "
        "\"top_p\": %.3f, \"temperature\": %.3f, \"repeat_penalty\": %.3f, \"skip_special_token\": %d, "
        "\"is_async\": %d, \"base_domain_id\": %d, \"embed_flash\": %d, \"enabled_cpus_num\": %d, "
        "\"enabled_cpus_mask\": %u, \"n_batch\": %d}, "
        "\"sampling\": {\"present\": %d, \"top_k\": %d, \"top_p\": %.3f, \"temperature\": %.3f, \"repeat_penalty\": %.3f, \"mirostat\": %d}}",
        e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], g_enable_thinking, g_keep_history, g_runs, g_init_calls,
        g_destroy_calls, g_abort_calls, g_clear_calls, g_input_type, (unsigned long long)(uintptr_t)g_userdata,
        g_max_new_tokens_run, g_lora, g_cache_path, g_n_batch_run, g_loaded_lora, g_loaded_cache, g_reserved_nonzero,
        g_sent_tokens, g_prefilled, g_think_finishes,
        g_n_image, g_n_image_tokens, g_image_width, g_image_height, g_image_sum, g_image_tags[0], g_image_tags[1],
        g_image_tags[2],
        g_param.max_context_len, g_param.max_new_tokens, g_param.top_k, g_param.n_keep, g_param.top_p,
        g_param.temperature, g_param.repeat_penalty, g_param.skip_special_token, g_param.is_async,
        g_param.extend_param.base_domain_id, g_param.extend_param.embed_flash,
        g_param.extend_param.enabled_cpus_num, g_param.extend_param.enabled_cpus_mask, g_param.extend_param.n_batch,
        g_have_sampling, g_sampling.top_k, g_sampling.top_p, g_sampling.temperature, g_sampling.repeat_penalty,
        g_sampling.mirostat);
    pthread_mutex_unlock(&g_lock);
    return g_last;
}

#define S(T) n += snprintf(buf + n, sizeof buf - n, "%s\"%s\": {\"size\": %zu, \"align\": %zu, \"fields\": {", first ? "" : ", ", #T, sizeof(T), _Alignof(T)); first = 0; ff = 1
#define F(T, f) n += snprintf(buf + n, sizeof buf - n, "%s\"%s\": [%zu, %zu]", ff ? "" : ", ", #f, offsetof(T, f), sizeof(((T *)0)->f)); ff = 0
#define E() n += snprintf(buf + n, sizeof buf - n, "}}")
const char *fake_layout_json(void) {
    static char buf[16384];
    int n = 0, first = 1, ff = 1;
    n += snprintf(buf + n, sizeof buf - n, "{");
    S(RKLLMExtendParam); F(RKLLMExtendParam, base_domain_id); F(RKLLMExtendParam, embed_flash); F(RKLLMExtendParam, enabled_cpus_num);
    F(RKLLMExtendParam, enabled_cpus_mask); F(RKLLMExtendParam, n_batch); F(RKLLMExtendParam, use_cross_attn); F(RKLLMExtendParam, reserved); E();
    S(RKLLMParam); F(RKLLMParam, model_path); F(RKLLMParam, max_context_len); F(RKLLMParam, max_new_tokens); F(RKLLMParam, top_k);
    F(RKLLMParam, n_keep); F(RKLLMParam, top_p); F(RKLLMParam, temperature); F(RKLLMParam, repeat_penalty);
    F(RKLLMParam, frequency_penalty); F(RKLLMParam, presence_penalty); F(RKLLMParam, mirostat); F(RKLLMParam, mirostat_tau);
    F(RKLLMParam, mirostat_eta); F(RKLLMParam, skip_special_token);
#ifdef RKLLM_ABI_13
    F(RKLLMParam, ignore_eos_token);
#else
    F(RKLLMParam, img_start); F(RKLLMParam, img_end); F(RKLLMParam, img_content);
#endif
    F(RKLLMParam, is_async); F(RKLLMParam, extend_param); E();
    S(RKLLMLoraAdapter); F(RKLLMLoraAdapter, lora_adapter_path); F(RKLLMLoraAdapter, lora_adapter_name); F(RKLLMLoraAdapter, scale); E();
    S(RKLLMEmbedInput); F(RKLLMEmbedInput, embed); F(RKLLMEmbedInput, n_tokens); E();
    S(RKLLMTokenInput); F(RKLLMTokenInput, input_ids); F(RKLLMTokenInput, n_tokens); E();
    S(RKLLMMultiModalInput); F(RKLLMMultiModalInput, prompt);
#ifdef RKLLM_ABI_13
    F(RKLLMMultiModalInput, image); F(RKLLMMultiModalInput, image.image_embed); F(RKLLMMultiModalInput, image.n_image_tokens);
    F(RKLLMMultiModalInput, image.n_image); F(RKLLMMultiModalInput, image.image_start); F(RKLLMMultiModalInput, image.image_end);
    F(RKLLMMultiModalInput, image.image_content); F(RKLLMMultiModalInput, image.image_width); F(RKLLMMultiModalInput, image.image_height);
    F(RKLLMMultiModalInput, video); F(RKLLMMultiModalInput, video.video_embed); F(RKLLMMultiModalInput, video.n_frame_tokens);
    F(RKLLMMultiModalInput, video.n_frame_per_video); F(RKLLMMultiModalInput, video.n_video); F(RKLLMMultiModalInput, video.video_start);
    F(RKLLMMultiModalInput, video.video_end); F(RKLLMMultiModalInput, video.video_content); F(RKLLMMultiModalInput, video.frame_width);
    F(RKLLMMultiModalInput, video.frame_height);
#ifdef RKLLM_ABI_131
    F(RKLLMMultiModalInput, audio); F(RKLLMMultiModalInput, audio.audio_embed); F(RKLLMMultiModalInput, audio.n_audio_tokens);
    F(RKLLMMultiModalInput, audio.n_audio); F(RKLLMMultiModalInput, audio.audio_start); F(RKLLMMultiModalInput, audio.audio_end);
    F(RKLLMMultiModalInput, audio.audio_content);
#endif
#else
    F(RKLLMMultiModalInput, image_embed); F(RKLLMMultiModalInput, n_image_tokens); F(RKLLMMultiModalInput, n_image);
    F(RKLLMMultiModalInput, image_width); F(RKLLMMultiModalInput, image_height);
#endif
    E();
    S(RKLLMInput); F(RKLLMInput, role); F(RKLLMInput, enable_thinking); F(RKLLMInput, input_type); F(RKLLMInput, prompt_input);
    F(RKLLMInput, embed_input); F(RKLLMInput, token_input); F(RKLLMInput, multimodal_input); E();
    S(RKLLMLoraParam); E();
    S(RKLLMPromptCacheParam); F(RKLLMPromptCacheParam, save_prompt_cache); F(RKLLMPromptCacheParam, prompt_cache_path); E();
    S(RKLLMCrossAttnParam); F(RKLLMCrossAttnParam, encoder_k_cache); F(RKLLMCrossAttnParam, encoder_v_cache);
    F(RKLLMCrossAttnParam, encoder_mask); F(RKLLMCrossAttnParam, encoder_pos); F(RKLLMCrossAttnParam, num_tokens); E();
#ifdef RKLLM_ABI_13
    S(RKLLMSamplingParam); F(RKLLMSamplingParam, top_k); F(RKLLMSamplingParam, top_p); F(RKLLMSamplingParam, temperature);
    F(RKLLMSamplingParam, repeat_penalty); F(RKLLMSamplingParam, frequency_penalty); F(RKLLMSamplingParam, presence_penalty);
    F(RKLLMSamplingParam, mirostat); F(RKLLMSamplingParam, mirostat_tau); F(RKLLMSamplingParam, mirostat_eta); E();
#endif
    S(RKLLMInferParam); F(RKLLMInferParam, mode); F(RKLLMInferParam, lora_params); F(RKLLMInferParam, prompt_cache_params);
#ifdef RKLLM_ABI_13
    F(RKLLMInferParam, sampling_params); F(RKLLMInferParam, max_new_tokens);
#endif
    F(RKLLMInferParam, keep_history); E();
    S(RKLLMResultLastHiddenLayer); F(RKLLMResultLastHiddenLayer, hidden_states); F(RKLLMResultLastHiddenLayer, embd_size); F(RKLLMResultLastHiddenLayer, num_tokens); E();
    S(RKLLMResultLogits); F(RKLLMResultLogits, logits); F(RKLLMResultLogits, vocab_size); F(RKLLMResultLogits, num_tokens); E();
    S(RKLLMPerfStat); F(RKLLMPerfStat, prefill_time_ms); F(RKLLMPerfStat, prefill_tokens); F(RKLLMPerfStat, generate_time_ms);
    F(RKLLMPerfStat, generate_tokens); F(RKLLMPerfStat, memory_usage_mb); E();
    S(RKLLMResult); F(RKLLMResult, text); F(RKLLMResult, token_id); F(RKLLMResult, last_hidden_layer); F(RKLLMResult, logits); F(RKLLMResult, perf); E();
#ifdef RKLLM_ABI_13
    S(RKLLMCallback); F(RKLLMCallback, result_callback); F(RKLLMCallback, result_userdata); F(RKLLMCallback, tokenizer_callback);
    F(RKLLMCallback, tokenizer_userdata); F(RKLLMCallback, embed_callback); F(RKLLMCallback, embed_userdata); E();
#endif
    n += snprintf(buf + n, sizeof buf - n, "}");
    return buf;
}
