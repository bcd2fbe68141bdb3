/* A test double of Rockchip's RKNN runtime (librknnrt.so): the calls rkollama's vision encoder
 * makes (rknn_init, rknn_query, rknn_inputs_set, rknn_run, rknn_outputs_get,
 * rknn_outputs_release, rknn_destroy), with the structs laid out as the public rknn_api.h
 * declares them (checked against tests/data/rknn_abi_layouts.json). Written for rkollama's tests;
 * no Rockchip code.
 *
 * The "model" takes one SIZE×SIZE×3 uint8 NHWC picture (FAKE_RKNN_SIZE, 28 by default) and gives
 * TOKENS embeddings of DIM floats (FAKE_RKNN_TOKENS, 4; FAKE_RKNN_DIM, 8): every float of a run
 * is the mean of the pixels it was given divided by 255, so a test can tell which picture reached
 * the language model. FAKE_RKNN_INIT=fail refuses the model. fake_rknn_json() reports what it saw.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

typedef uint64_t rknn_context;
typedef enum { RKNN_TENSOR_NCHW = 0, RKNN_TENSOR_NHWC = 1 } rknn_tensor_format;
typedef enum { RKNN_TENSOR_FLOAT32 = 0, RKNN_TENSOR_UINT8 = 3 } rknn_tensor_type;
typedef enum { RKNN_TENSOR_QNT_NONE = 0 } rknn_tensor_qnt_type;
typedef struct { uint32_t n_input; uint32_t n_output; } rknn_input_output_num;
typedef struct {
    uint32_t index; uint32_t n_dims; uint32_t dims[16]; char name[256]; uint32_t n_elems; uint32_t size;
    rknn_tensor_format fmt; rknn_tensor_type type; rknn_tensor_qnt_type qnt_type; int8_t fl; int32_t zp;
    float scale; uint32_t w_stride; uint32_t size_with_stride; uint8_t pass_through; uint32_t h_stride;
} rknn_tensor_attr;
typedef struct {
    uint32_t index; void *buf; uint32_t size; uint8_t pass_through; rknn_tensor_type type; rknn_tensor_format fmt;
} rknn_input;
typedef struct { uint8_t want_float; uint8_t is_prealloc; uint32_t index; void *buf; uint32_t size; } rknn_output;

static int g_inits = 0, g_destroys = 0, g_runs = 0, g_bad_inputs = 0, g_live_outputs = 0, g_alive = 0;
static double g_mean = 0.0;
static char g_json[1024], g_model[512];

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}
static int side(void) { return env_int("FAKE_RKNN_SIZE", 28); }
static int tokens(void) { return env_int("FAKE_RKNN_TOKENS", 4); }
static int dim(void) { return env_int("FAKE_RKNN_DIM", 8); }

int rknn_init(rknn_context *ctx, void *model, uint32_t size, uint32_t flag, void *extend) {
    (void)flag; (void)extend;
    g_inits++;
    const char *mode = getenv("FAKE_RKNN_INIT");
    if (!ctx || !model || (mode && strcmp(mode, "fail") == 0)) return -6;  /* RKNN_ERR_MODEL_INVALID */
    snprintf(g_model, sizeof g_model, "%s", size == 0 ? (const char *)model : "(buffer)");
    *ctx = 0x5eed;
    g_alive = 1;
    return 0;
}

int rknn_destroy(rknn_context ctx) {
    if (ctx != 0x5eed || !g_alive) return -7;  /* RKNN_ERR_CTX_INVALID */
    g_destroys++;
    g_alive = 0;
    return 0;
}

int rknn_query(rknn_context ctx, int cmd, void *info, uint32_t size) {
    if (ctx != 0x5eed || !info) return -7;
    if (cmd == 0) {
        if (size != sizeof(rknn_input_output_num)) return -5;
        rknn_input_output_num *n = info;
        n->n_input = 1; n->n_output = 1;
        return 0;
    }
    if (size != sizeof(rknn_tensor_attr)) return -5;
    rknn_tensor_attr *a = info;
    uint32_t index = a->index;
    memset(a, 0, sizeof *a);
    a->index = index;
    if (index != 0) return -5;
    if (cmd == 1) {  /* input: NHWC */
        a->n_dims = 4; a->dims[0] = 1; a->dims[1] = side(); a->dims[2] = side(); a->dims[3] = 3;
        a->n_elems = side() * side() * 3; a->size = a->n_elems; a->fmt = RKNN_TENSOR_NHWC; a->type = RKNN_TENSOR_UINT8;
        snprintf(a->name, sizeof a->name, "pixel_values");
        return 0;
    }
    if (cmd == 2) {  /* output: [1, TOKENS, DIM] */
        a->n_dims = 3; a->dims[0] = 1; a->dims[1] = tokens(); a->dims[2] = dim();
        a->n_elems = tokens() * dim(); a->size = a->n_elems * 4; a->fmt = RKNN_TENSOR_NCHW; a->type = RKNN_TENSOR_FLOAT32;
        snprintf(a->name, sizeof a->name, "image_embeds");
        return 0;
    }
    return -5;
}

int rknn_inputs_set(rknn_context ctx, uint32_t n, rknn_input inputs[]) {
    if (ctx != 0x5eed || n != 1 || !inputs) return -5;
    rknn_input *in = &inputs[0];
    uint32_t want = (uint32_t)(side() * side() * 3);
    if (in->index != 0 || in->size != want || in->type != RKNN_TENSOR_UINT8 || in->fmt != RKNN_TENSOR_NHWC || !in->buf) {
        g_bad_inputs++;
        return -8;  /* RKNN_ERR_INPUT_INVALID */
    }
    double sum = 0.0;
    for (uint32_t i = 0; i < in->size; i++) sum += ((uint8_t *)in->buf)[i];
    g_mean = sum / in->size;
    return 0;
}

int rknn_run(rknn_context ctx, void *extend) {
    (void)extend;
    if (ctx != 0x5eed) return -7;
    g_runs++;
    return 0;
}

int rknn_outputs_get(rknn_context ctx, uint32_t n, rknn_output outputs[], void *extend) {
    (void)extend;
    if (ctx != 0x5eed || n != 1 || !outputs || outputs[0].index != 0 || !outputs[0].want_float) return -9;
    uint32_t count = (uint32_t)(tokens() * dim());
    float *data = malloc(count * sizeof *data);
    for (uint32_t i = 0; i < count; i++) data[i] = (float)(g_mean / 255.0);
    outputs[0].buf = data;
    outputs[0].size = count * sizeof *data;
    g_live_outputs++;
    return 0;
}

int rknn_outputs_release(rknn_context ctx, uint32_t n, rknn_output outputs[]) {
    if (ctx != 0x5eed || n != 1 || !outputs) return -9;
    free(outputs[0].buf);
    outputs[0].buf = NULL;
    g_live_outputs--;
    return 0;
}

/* ---- test hooks (not part of the runtime's API) ------------------------------------------ */
const char *fake_rknn_json(void) {
    snprintf(g_json, sizeof g_json,
             "{\"inits\": %d, \"destroys\": %d, \"runs\": %d, \"bad_inputs\": %d, \"live_outputs\": %d, "
             "\"last_mean\": %.4f, \"model\": \"%s\"}",
             g_inits, g_destroys, g_runs, g_bad_inputs, g_live_outputs, g_mean, g_model);
    return g_json;
}

const char *fake_rknn_layout_json(void) {
    static char out[4096];
    size_t at = 0;
#define S(t) at += snprintf(out + at, sizeof out - at, "%s\"%s\": {\"size\": %zu, \"fields\": {", at > 1 ? "}}, " : "{", #t, sizeof(t)); { int first_field = 1;
#define F(t, m) at += snprintf(out + at, sizeof out - at, "%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", #m, offsetof(t, m), sizeof(((t *)0)->m)); first_field = 0;
#define E() }
    S(rknn_input_output_num) F(rknn_input_output_num, n_input) F(rknn_input_output_num, n_output) E()
    S(rknn_tensor_attr) F(rknn_tensor_attr, index) F(rknn_tensor_attr, n_dims) F(rknn_tensor_attr, dims)
        F(rknn_tensor_attr, name) F(rknn_tensor_attr, n_elems) F(rknn_tensor_attr, size) F(rknn_tensor_attr, fmt)
        F(rknn_tensor_attr, type) F(rknn_tensor_attr, qnt_type) F(rknn_tensor_attr, fl) F(rknn_tensor_attr, zp)
        F(rknn_tensor_attr, scale) F(rknn_tensor_attr, w_stride) F(rknn_tensor_attr, size_with_stride)
        F(rknn_tensor_attr, pass_through) F(rknn_tensor_attr, h_stride) E()
    S(rknn_input) F(rknn_input, index) F(rknn_input, buf) F(rknn_input, size) F(rknn_input, pass_through)
        F(rknn_input, type) F(rknn_input, fmt) E()
    S(rknn_output) F(rknn_output, want_float) F(rknn_output, is_prealloc) F(rknn_output, index)
        F(rknn_output, buf) F(rknn_output, size) E()
    snprintf(out + at, sizeof out - at, "}}}");
    return out;
}
