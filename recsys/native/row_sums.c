/* Row sums over index lists (see recsys/native/__init__.py: add_rows, segment_square_sums). */
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
