/* The largest `depth` entries of every row of a score matrix, sorted (see recsys/native/__init__.py: top_rows).
 *
 * Each row is scanned once against the smallest value kept so far: SPAN entries at a time are compared with it
 * (a vectorised count that is rarely above zero once the list is full), and only an entry above it is inserted
 * into the sorted list. Equal values keep their column order (the earlier column first), so the result is deterministic.
 */
#include <math.h>
#include <stdint.h>

#define SPAN 32

static int count_above(const float *x, float threshold) {
    int count = 0;
    for (int l = 0; l < SPAN; ++l) count += x[l] > threshold;
    return count;
}

static void top_of_row(const float *row, int64_t num_cols, int64_t depth, float *values, int64_t *index) {
    int64_t filled = 0;
    for (int64_t start = 0; start < num_cols; start += SPAN) {
        const int64_t stop = start + SPAN < num_cols ? start + SPAN : num_cols;
        if (filled == depth && stop - start == SPAN && count_above(row + start, values[depth - 1]) == 0) continue;
        for (int64_t j = start; j < stop; ++j) {
            const float x = row[j];
            int64_t at;
            if (filled < depth) {
                at = filled++;
            } else if (x > values[depth - 1]) {
                at = depth - 1;
            } else {
                continue;
            }
            for (; at > 0 && x > values[at - 1]; --at) {
                values[at] = values[at - 1];
                index[at] = index[at - 1];
            }
            values[at] = x;
            index[at] = j;
        }
    }
}

/* rows r < num_rows of `scores` (row r starts at scores + r * stride); outputs [num_rows][depth], depth <= num_cols */
void top_rows(int64_t num_rows, int64_t num_cols, int64_t stride, const float *scores, int64_t depth, int64_t threads,
              float *values, int64_t *index) {
#pragma omp parallel for schedule(static) if (threads > 1) num_threads(threads)
    for (int64_t r = 0; r < num_rows; ++r) top_of_row(scores + r * stride, num_cols, depth, values + r * depth,
                                                      index + r * depth);
}
