/* Per-block NCF weighted-BCE gradients in one pass over the samples (see recsys/native/__init__.py).
 *
 * Samples come in blocks of CHUNK; block b holds samples b*CHUNK .. b*CHUNK + CHUNK - 1 of one client. Two
 * implementations, each deterministic (a block's result does not depend on the other blocks, the batch or the
 * thread):
 * - block_range_8, the default shape (first layer 8 units, hidden layers (8, 8), d = 8): a sample's 8 units are one
 *   8-float vector (GCC/Clang vector extensions); each sample runs forward and backward and adds its rank-one
 *   terms to the block's sums, kept in registers, in sample order;
 * - block_range, any shape: the MLP runs on channel-major scratch arrays ([width][CHUNK], the sample index
 *   innermost, so the compiler vectorises every loop over samples), and every per-block sum Σ_s a_s b_s is kept in
 *   LANES independent partial sums added in a fixed order at the end.
 * Both compute the loss and ∂L/∂logit of a block's samples together (vector expf/log1pf where glibc has them).
 *
 * Returns 0, 1 if scratch memory could not be allocated, 2 if an item, owner or sample_row index is out of range
 * (the outputs are then incomplete).
 *
 * Layer 0 (W0 [p; q] + b0) arrives split: item_part[i] = W_q q_i, row_part[r] = W_p p_r + b0.
 * widths[0..num_layers]: widths[0] = h0 (layer 0's output), widths[k] = output of linear layer k, widths[L] = 1.
 * params: for k = 1..L, W_k ([widths[k]][widths[k-1]], row-major) then b_k ([widths[k]]).
 * block_grads, per block (same order): for k = 1..L, dW_k then db_k; then db0 [h0]; then dW_q [h0][dim].
 * With δ_s = ∂L/∂(layer 0's output) of sample s, the kernel adds δ_s to touched_grad[sample_row[s]] and, unless
 * row_grad is NULL, to row_grad[owner[s]], in sample order (as torch's scatter_add_ does). Samples of weight 0
 * (padding) are skipped there: their δ is zero, and their rows may belong to another client, which another
 * thread may be adding to.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef VECTOR_MATH /* glibc's libmvec: the loss loop calls 8- or 16-wide expf and log1pf */
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
#endif

#define CHUNK 64
#define LANES 16

/* Σ of LANES partial sums in a fixed pairwise order (a few vector steps rather than LANES dependent adds) */
static float lanes_total(float *lane) {
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
    return lane[0];
}

static float block_dot(const float *a, const float *b) {
    float lane[LANES] = {0};
    for (int s = 0; s < CHUNK; s += LANES)
        for (int l = 0; l < LANES; ++l) lane[l] += a[s + l] * b[s + l];
    return lanes_total(lane);
}

static float block_sum(const float *a) {
    float lane[LANES] = {0};
    for (int s = 0; s < CHUNK; s += LANES)
        for (int l = 0; l < LANES; ++l) lane[l] += a[s + l];
    return lanes_total(lane);
}

/* Σ_s w_s BCE(z_s, y_s) over a block's logits z, and ∂/∂z_s of it into up[s] (one exp per sample, vectorised) */
static inline float block_loss(const float *logits, const float *labels, const float *weights, float *up) {
    float loss = 0;
#pragma omp simd reduction(+ : loss)
    for (int s = 0; s < CHUNK; ++s) {
        const float z = logits[s], y = labels[s], w = weights[s], e = expf(-fabsf(z));
        loss += w * ((z > 0 ? z : 0) - z * y + log1pf(e));
        up[s] = ((z >= 0 ? 1.0f : e) / (1.0f + e) - y) * w;
    }
    return loss;
}

static int64_t gradients_per_block(int64_t num_layers, const int64_t *widths, int64_t dim) {
    int64_t count = widths[0] * (1 + dim);
    for (int64_t k = 1; k <= num_layers; ++k) count += widths[k] * (widths[k - 1] + 1);
    return count;
}

/* blocks 0 .. num_blocks - 1 of the pointers given (the caller offsets them to a range of blocks) */
static int block_range(int64_t num_blocks, int64_t num_layers, const int64_t *widths, int64_t dim, int64_t num_items,
                       int64_t num_rows, int64_t num_touched, const int64_t *items, const int64_t *owner,
                       const float *labels, const float *weights, const int64_t *sample_row, const float *item_part,
                       const float *row_part, const float *item_emb, const float *params, float *block_losses,
                       float *block_grads, float *touched_grad, float *row_grad) {
    int64_t total_width = 0, max_width = dim, grads_per_block = gradients_per_block(num_layers, widths, dim);
    for (int64_t k = 0; k <= num_layers; ++k) {
        total_width += widths[k];
        if (widths[k] > max_width) max_width = widths[k];
    }
    /* acts: every layer's output, channel-major; up: ∂L/∂(current layer's output); next_up, q: scratch */
    float *scratch = malloc(sizeof(float) * CHUNK * (total_width + 3 * max_width));
    if (scratch == NULL) return 1;
    const int64_t num_samples = num_blocks * CHUNK;
    for (int64_t s = 0; s < num_samples; ++s)
        if (items[s] < 0 || items[s] >= num_items || owner[s] < 0 || owner[s] >= num_rows || sample_row[s] < 0 ||
            sample_row[s] >= num_touched) {
            free(scratch);
            return 2;
        }
    float *up = scratch + CHUNK * total_width, *next_up = up + CHUNK * max_width, *q = next_up + CHUNK * max_width;
    const int64_t h0 = widths[0];

    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t first = b * CHUNK;
        float *acts = scratch, *grads = block_grads + b * grads_per_block;
        for (int s = 0; s < CHUNK; ++s) {
            const float *item = item_part + items[first + s] * h0, *row = row_part + owner[first + s] * h0;
            for (int64_t c = 0; c < h0; ++c) {
                const float x = item[c] + row[c];
                acts[c * CHUNK + s] = x > 0 ? x : 0;
            }
        }
        const float *weight = params;
        float *in = acts;
        for (int64_t k = 1; k <= num_layers; ++k) {
            const int64_t fan_in = widths[k - 1], fan_out = widths[k];
            const float *bias = weight + fan_out * fan_in;
            float *out = in + fan_in * CHUNK;
            for (int64_t j = 0; j < fan_out; ++j) {
                float *y = out + j * CHUNK;
                for (int s = 0; s < CHUNK; ++s) y[s] = bias[j];
                for (int64_t c = 0; c < fan_in; ++c) {
                    const float w = weight[j * fan_in + c], *x = in + c * CHUNK;
                    for (int s = 0; s < CHUNK; ++s) y[s] += w * x[s];
                }
                if (k < num_layers)
                    for (int s = 0; s < CHUNK; ++s) y[s] = y[s] > 0 ? y[s] : 0;
            }
            weight = bias + fan_out;
            in = out;
        }
        block_losses[b] = block_loss(in, labels + first, weights + first, up); /* in: the logits */

        /* backward, layer L down to 1; layer k's gradients go to their slot in the block's output */
        int64_t offset = grads_per_block - widths[0] * (1 + dim);
        float *layer_in = in;
        for (int64_t k = num_layers; k >= 1; --k) {
            const int64_t fan_in = widths[k - 1], fan_out = widths[k];
            offset -= fan_out * (fan_in + 1);
            weight -= fan_out * (fan_in + 1);
            layer_in -= fan_in * CHUNK;
            for (int64_t j = 0; j < fan_out; ++j) {
                for (int64_t c = 0; c < fan_in; ++c)
                    grads[offset + j * fan_in + c] = block_dot(up + j * CHUNK, layer_in + c * CHUNK);
                grads[offset + fan_out * fan_in + j] = block_sum(up + j * CHUNK);
            }
            for (int64_t c = 0; c < fan_in; ++c) {
                float *g = next_up + c * CHUNK;
                const float *x = layer_in + c * CHUNK;
                for (int s = 0; s < CHUNK; ++s) g[s] = 0;
                for (int64_t j = 0; j < fan_out; ++j) {
                    const float w = weight[j * fan_in + c], *u = up + j * CHUNK;
                    for (int s = 0; s < CHUNK; ++s) g[s] += w * u[s];
                }
                for (int s = 0; s < CHUNK; ++s) g[s] = x[s] > 0 ? g[s] : 0;
            }
            float *swap = up;
            up = next_up;
            next_up = swap;
        }
        /* up: ∂L/∂(layer 0's output); db0, dW_q and the per-row sums */
        float *first_bias = grads + grads_per_block - h0 * (1 + dim), *item_weight = first_bias + h0;
        for (int s = 0; s < CHUNK; ++s) {
            const float *e = item_emb + items[first + s] * dim;
            for (int64_t c = 0; c < dim; ++c) q[c * CHUNK + s] = e[c];
        }
        for (int64_t c = 0; c < h0; ++c) {
            first_bias[c] = block_sum(up + c * CHUNK);
            for (int64_t e = 0; e < dim; ++e) item_weight[c * dim + e] = block_dot(up + c * CHUNK, q + e * CHUNK);
        }
        for (int s = 0; s < CHUNK; ++s) {
            if (weights[first + s] == 0) continue; /* padding: adds zeros, and may point at another client's row */
            float *touched = touched_grad + sample_row[first + s] * h0;
            for (int64_t c = 0; c < h0; ++c) touched[c] += up[c * CHUNK + s];
            if (row_grad != NULL) {
                float *row = row_grad + owner[first + s] * h0;
                for (int64_t c = 0; c < h0; ++c) row[c] += up[c * CHUNK + s];
            }
        }
    }
    free(scratch);
    return 0;
}

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t m8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void add8(float *p, v8 v) {
    v8 sum = load8(p) + v;
    memcpy(p, &sum, sizeof sum);
}

static inline v8 where_positive(v8 value, v8 x) { return (v8)((m8)value & (x > 0)); } /* value where x > 0, else 0 */

static inline float sum8(v8 t) { return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])); }

/* block_range for widths {8, 8, 1} and dim 8 (the default NCF); same arguments, same outputs */
static int block_range_8(int64_t num_blocks, int64_t num_items, int64_t num_rows, int64_t num_touched,
                         const int64_t *items, const int64_t *owner, const float *labels, const float *weights,
                         const int64_t *sample_row, const float *item_part, const float *row_part,
                         const float *item_emb, const float *params, float *block_losses, float *block_grads,
                         float *touched_grad, float *row_grad) {
    enum { H = 8, PER_BLOCK = H * H + H + H + 1 + H + H * H };
    v8 weight1[H], column1[H]; /* rows and columns of W_1 */
    for (int j = 0; j < H; ++j) weight1[j] = load8(params + H * j);
    for (int c = 0; c < H; ++c)
        for (int j = 0; j < H; ++j) column1[c][j] = params[H * j + c];
    const v8 bias1 = load8(params + H * H), weight2 = load8(params + H * H + H);
    const float bias2 = params[H * H + 2 * H];
    v8 x0[CHUNK], x1[CHUNK];
    float logits[CHUNK], up[CHUNK];
    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t first = b * CHUNK;
        for (int s = 0; s < CHUNK; ++s) {
            const int64_t item = items[first + s], row = owner[first + s], touched = sample_row[first + s];
            if (item < 0 || item >= num_items || row < 0 || row >= num_rows || touched < 0 || touched >= num_touched)
                return 2;
            const v8 x = load8(item_part + H * item) + load8(row_part + H * row);
            v8 z = bias1;
            x0[s] = where_positive(x, x);
            for (int c = 0; c < H; ++c) z += x0[s][c] * column1[c];
            x1[s] = where_positive(z, z);
            logits[s] = bias2 + sum8(x1[s] * weight2);
        }
        block_losses[b] = block_loss(logits, labels + first, weights + first, up);
        v8 grad_weight1[H] = {{0}}, grad_item_weight[H] = {{0}}, grad_weight2 = {0}, grad_bias1 = {0}, grad_bias0 = {0};
        float grad_bias2 = 0;
        for (int s = 0; s < CHUNK; ++s) {
            if (weights[first + s] == 0) continue; /* padding: adds zeros, and may point at another client's row */
            const float delta2 = up[s];
            grad_weight2 += delta2 * x1[s];
            grad_bias2 += delta2;
            const v8 delta1 = where_positive(delta2 * weight2, x1[s]);
            v8 delta0 = {0};
            for (int j = 0; j < H; ++j) {
                grad_weight1[j] += delta1[j] * x0[s];
                delta0 += delta1[j] * weight1[j];
            }
            grad_bias1 += delta1;
            delta0 = where_positive(delta0, x0[s]);
            grad_bias0 += delta0;
            const v8 q = load8(item_emb + H * items[first + s]);
            for (int c = 0; c < H; ++c) grad_item_weight[c] += delta0[c] * q;
            add8(touched_grad + H * sample_row[first + s], delta0);
            if (row_grad != NULL) add8(row_grad + H * owner[first + s], delta0);
        }
        float *grads = block_grads + b * PER_BLOCK;
        memcpy(grads, grad_weight1, sizeof grad_weight1);
        memcpy(grads + H * H, &grad_bias1, sizeof grad_bias1);
        memcpy(grads + H * H + H, &grad_weight2, sizeof grad_weight2);
        grads[H * H + 2 * H] = grad_bias2;
        memcpy(grads + H * H + 2 * H + 1, &grad_bias0, sizeof grad_bias0);
        memcpy(grads + H * H + 3 * H + 1, grad_item_weight, sizeof grad_item_weight);
    }
    return 0;
}

static int any_block_range(int64_t num_blocks, int64_t num_layers, const int64_t *widths, int64_t dim,
                           int64_t num_items, int64_t num_rows, int64_t num_touched, const int64_t *items,
                           const int64_t *owner, const float *labels, const float *weights, const int64_t *sample_row,
                           const float *item_part, const float *row_part, const float *item_emb, const float *params,
                           float *block_losses, float *block_grads, float *touched_grad, float *row_grad) {
    if (num_layers == 2 && widths[0] == 8 && widths[1] == 8 && widths[2] == 1 && dim == 8)
        return block_range_8(num_blocks, num_items, num_rows, num_touched, items, owner, labels, weights, sample_row,
                             item_part, row_part, item_emb, params, block_losses, block_grads, touched_grad, row_grad);
    return block_range(num_blocks, num_layers, widths, dim, num_items, num_rows, num_touched, items, owner, labels,
                       weights, sample_row, item_part, row_part, item_emb, params, block_losses, block_grads,
                       touched_grad, row_grad);
}

/* Blocks bounds[r] .. bounds[r + 1] - 1 for r < num_ranges, the ranges in parallel (OpenMP, when built with it:
 * torch's own runtime and its idle threads; one thread per range, none started for one range). Every client's
 * blocks lie in one range, so the rows a range adds to are its own and the sums do not depend on the number of
 * ranges or threads. */
int ncf_block_grads(int64_t num_ranges, const int64_t *bounds, int64_t num_layers, const int64_t *widths, int64_t dim,
                    int64_t num_items, int64_t num_rows, int64_t num_touched, const int64_t *items,
                    const int64_t *owner, const float *labels, const float *weights, const int64_t *sample_row,
                    const float *item_part, const float *row_part, const float *item_emb, const float *params,
                    float *block_losses, float *block_grads, float *touched_grad, float *row_grad) {
    const int64_t per_block = gradients_per_block(num_layers, widths, dim);
    int status = 0;
#pragma omp parallel for schedule(static, 1) if (num_ranges > 1) num_threads(num_ranges) reduction(max : status)
    for (int64_t r = 0; r < num_ranges; ++r) {
        const int64_t first = bounds[r], samples = bounds[r] * CHUNK;
        const int range_status = any_block_range(bounds[r + 1] - first, num_layers, widths, dim, num_items, num_rows,
                                             num_touched, items + samples, owner + samples, labels + samples,
                                             weights + samples, sample_row + samples, item_part, row_part, item_emb,
                                             params, block_losses + first, block_grads + first * per_block,
                                             touched_grad, row_grad);
        if (range_status > status) status = range_status;
    }
    return status;
}
