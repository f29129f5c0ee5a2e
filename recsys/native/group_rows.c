/* Padded groups of a round's uploaded item rows (see recsys/native/__init__.py: group_rows). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Entry e (item row items[e], the `width` floats at values + e * width, flag flags[e]) becomes upload k of its row's
 * group, k = its rank among that row's entries in entry order. Row j's group has size[j] slots starting at slot
 * first[j] (first[j] < 0: no group): if `out` is not null, upload k's values go to out[(first[j] + k) * width + c] and
 * its flag to out_flags[first[j] + k]; if `columns` is not null, its values go to columns[first[j] * width + c * size[j]
 * + k]. Unfilled slots get 0 (out, flags) and +inf (columns). Two passes: each slot's entry, then the outputs group
 * by group, so that every write is sequential. 3 unless the groups tile the num_slots slots; 2 if an item is out of
 * range, has no group or more entries than slots (nothing written either way); 1 if scratch memory cannot be
 * allocated. */
int group_rows(int64_t count, int64_t width, const int64_t *items, const float *values, const uint8_t *flags,
               int64_t num_items, const int64_t *first, const int64_t *size, int64_t num_slots, float *out,
               float *columns, uint8_t *out_flags) {
    int64_t *filled = calloc((size_t)(num_items > 0 ? num_items : 1), sizeof(int64_t));
    int64_t *entry = malloc((size_t)(num_slots > 0 ? num_slots : 1) * sizeof(int64_t));
    int status = filled && entry ? 0 : 1;
    int64_t tiled = 0;
    for (int64_t j = 0; j < num_items && !status; ++j) {
        if (first[j] < 0) continue;
        if (size[j] < 0 || first[j] + size[j] > num_slots) status = 3;
        tiled += size[j];
    }
    if (!status && tiled != num_slots) status = 3;
    for (int64_t e = 0; e < count && !status; ++e) {
        int64_t j = items[e];
        if (j < 0 || j >= num_items || first[j] < 0 || filled[j] >= size[j])
            status = 2;
        else
            entry[first[j] + filled[j]++] = e;
    }
    for (int64_t j = 0; j < num_items && !status; ++j) {
        if (first[j] < 0) continue;
        const int64_t *group = entry + first[j];
        int64_t n = filled[j], slots = size[j];
        float *column = columns ? columns + first[j] * width : NULL;
        for (int64_t k = 0; k < slots; ++k) {
            const float *value = k < n ? values + group[k] * width : NULL;
            if (out) {
                float *row = out + (first[j] + k) * width;
                for (int64_t c = 0; c < width; ++c) row[c] = value ? value[c] : 0.0f;
                out_flags[first[j] + k] = value ? flags[group[k]] : 0;
            }
            if (column)
                for (int64_t c = 0; c < width; ++c) column[c * slots + k] = value ? value[c] : INFINITY;
        }
    }
    free(filled);
    free(entry);
    return status;
}
