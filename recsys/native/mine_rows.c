/* Gradient steps on user vectors, each paired with one item: A-hum's hard-user mining (see recsys/native/__init__.py:
 * mine_rows). Row r takes `iterations` steps p ← p − step · ∂l/∂p with l(p) = BCE(Υ(p, q_r), 0) = −log(1 − Υ(p, q_r)),
 * so ∂l/∂logit = σ(logit). item_part[r] = W_q q_r + b0 is fixed (Θ does not change while mining).
 * widths, params: as in ncf_block_grads.c; user_weight: W_p, [h0][dim] (row stride `weight_stride`).
 * Returns 0, 3 if there are more than MAX_LAYERS layers after the first, 1 if scratch memory could not be allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_LAYERS 16

int mine_rows(int64_t num_rows, int64_t num_layers, const int64_t *widths, int64_t dim, const float *user_weight,
              int64_t weight_stride, const float *item_part, const float *params, float step, int64_t iterations,
              float *rows) {
    if (num_layers > MAX_LAYERS) return 3;
    int64_t acts_at[MAX_LAYERS + 2], weight_at[MAX_LAYERS + 1], total = 0, offset = 0, max_width = 1;
    for (int64_t k = 0; k <= num_layers; ++k) {
        acts_at[k] = total;
        total += widths[k];
        if (widths[k] > max_width) max_width = widths[k];
        if (k > 0) {
            weight_at[k] = offset;
            offset += widths[k] * (widths[k - 1] + 1);
        }
    }
    float *acts = malloc(sizeof(float) * (total + 2 * max_width + dim));
    if (acts == NULL) return 1;
    float *delta = acts + total, *next = delta + max_width, *grad = next + max_width;
    const int64_t h0 = widths[0];
    for (int64_t r = 0; r < num_rows; ++r) {
        float *p = rows + r * dim;
        const float *fixed = item_part + r * h0;
        for (int64_t it = 0; it < iterations; ++it) {
            for (int64_t c = 0; c < h0; ++c) { /* layer 0: W_p p + (W_q q + b0), ReLU */
                float z = fixed[c];
                for (int64_t e = 0; e < dim; ++e) z += user_weight[c * weight_stride + e] * p[e];
                acts[c] = z > 0 ? z : 0;
            }
            for (int64_t k = 1; k <= num_layers; ++k) {
                const int64_t fan_in = widths[k - 1], fan_out = widths[k];
                const float *weight = params + weight_at[k], *bias = weight + fan_out * fan_in;
                const float *in = acts + acts_at[k - 1];
                float *out = acts + acts_at[k];
                for (int64_t j = 0; j < fan_out; ++j) {
                    float z = bias[j];
                    for (int64_t c = 0; c < fan_in; ++c) z += weight[j * fan_in + c] * in[c];
                    out[j] = k < num_layers && z < 0 ? 0 : z;
                }
            }
            delta[0] = 1.0f / (1.0f + expf(-acts[acts_at[num_layers]])); /* ∂l/∂logit */
            for (int64_t k = num_layers; k >= 1; --k) {
                const int64_t fan_in = widths[k - 1], fan_out = widths[k];
                const float *weight = params + weight_at[k], *in = acts + acts_at[k - 1];
                for (int64_t c = 0; c < fan_in; ++c) {
                    float g = 0;
                    for (int64_t j = 0; j < fan_out; ++j) g += delta[j] * weight[j * fan_in + c];
                    next[c] = in[c] > 0 ? g : 0;
                }
                float *swap = delta;
                delta = next;
                next = swap;
            }
            for (int64_t e = 0; e < dim; ++e) {
                float g = 0;
                for (int64_t c = 0; c < h0; ++c) g += delta[c] * user_weight[c * weight_stride + e];
                grad[e] = g;
            }
            for (int64_t e = 0; e < dim; ++e) p[e] -= step * grad[e];
        }
    }
    free(acts);
    return 0;
}
