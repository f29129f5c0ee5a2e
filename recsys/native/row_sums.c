/* Row sums (see recsys/native/__init__.py: add_rows, segment_square_sums, range_sums). */
#include <stdint.h>

/* out[index[i]] += values[i] for i in order (rows of `width` floats): the additions of torch's index_add_ and
 * scatter_add_ in their order, so the same sums to the bit, without their index sort. 2 if an index is out of range. */
int add_rows(int64_t count, int64_t width, const int64_t *index, int64_t num_rows, const float *values, float *out) {
    for (int64_t i = 0; i < count; ++i)
        if (index[i] < 0 || index[i] >= num_rows) return 2;
    for (int64_t i = 0; i < count; ++i) {
        float *row = out + index[i] * width;
        const float *value = values + i * width;
        for (int64_t c = 0; c < width; ++c) row[c] += value[c];
    }
    return 0;
}

/* out[c] = Σ_{r in indptr[c] .. indptr[c + 1] - 1} Σ_j values[r][j]² (rows of `width` floats), each sum in order */
void segment_square_sums(int64_t num_segments, const int64_t *indptr, int64_t width, const float *values,
                         float *out) {
    for (int64_t c = 0; c < num_segments; ++c) {
        float total = 0;
        for (int64_t r = indptr[c]; r < indptr[c + 1]; ++r) {
            float row = 0;
            for (int64_t j = 0; j < width; ++j) row += values[r * width + j] * values[r * width + j];
            total += row;
        }
        out[c] = total;
    }
}

/* out[r] = Σ_{k = low[r / per_group]}^{high[r / per_group] - 1} rows[r * size + k], summed in k order (for rows of
 * sorted values: sums over ranks). 2 unless 0 ≤ low ≤ high ≤ size. */
int range_sums(int64_t num_rows, int64_t per_group, int64_t size, const float *rows, const int64_t *low,
               const int64_t *high, float *out) {
    for (int64_t g = 0; g * per_group < num_rows; ++g)
        if (low[g] < 0 || low[g] > high[g] || high[g] > size) return 2;
    for (int64_t r = 0; r < num_rows; ++r) {
        int64_t g = r / per_group;
        const float *row = rows + r * size;
        float total = low[g] < high[g] ? row[low[g]] : 0.0f;  /* the first as is, so a lone -0 stays -0 */
        for (int64_t k = low[g] + 1; k < high[g]; ++k) total += row[k];
        out[r] = total;
    }
    return 0;
}
