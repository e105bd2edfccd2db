/*
 * foundry.h — C ABI of the Model Foundry Rust runtime (runtimes/rust/c).
 *
 * Build: make c   (libfoundry.so and libfoundry.a in runtimes/rust/target/release/)
 * Link:  cc app.c -Iruntimes/rust/c/include -Lruntimes/rust/target/release -lfoundry
 *
 * A model is immutable once loaded: one foundry_model may answer from many threads at once.
 * Texts are UTF-8 (invalid sequences are read as U+FFFD, like the foundry-rt CLI).
 */
#ifndef FOUNDRY_H
#define FOUNDRY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct foundry_model foundry_model;

/*
 * Load and validate <models_dir>/<task>_preprocessor.bin + <task>_classifier.onnx.
 * Returns NULL on failure and, if error is not NULL, writes the message (which names the file
 * and what is wrong), NUL-terminated and cut to error_len bytes.
 */
foundry_model *foundry_model_load(const char *models_dir, const char *task, char *error,
                                  size_t error_len);

/* Free a model (NULL is allowed). */
void foundry_model_free(foundry_model *model);

/* Number of labels K. */
size_t foundry_model_num_labels(const foundry_model *model);

/* Label k (0 <= k < K) as a NUL-terminated UTF-8 string owned by the model; NULL if out of range. */
const char *foundry_model_label(const foundry_model *model, size_t k);

/* The confidence threshold recorded in the .bin. */
double foundry_model_threshold(const foundry_model *model);

/*
 * The unfamiliarity of text[0..len) (spec section 5: the share of its n-grams the model has
 * never seen, in [0, 1]); an answer is confident only when it is at most
 * foundry_model_max_unfamiliar(model). NaN if an argument is NULL.
 */
double foundry_model_unfamiliar(const foundry_model *model, const char *text, size_t len);

/* The unfamiliarity gate recorded in the .bin (familiarity.max_unfamiliar). */
double foundry_model_max_unfamiliar(const foundry_model *model);

/*
 * Classify text[0..len). When a reflex rule of the .bin answers it (see foundry_model_rule),
 * writes probability 1 for the rule's label and 0 for the others, sets *confident to 1 and
 * returns the rule's label. Otherwise the model answers: writes K probabilities (label order) to probabilities, sets
 * *confident (if not NULL) to 1 when the top probability reaches the threshold and the text
 * is familiar enough (its unfamiliarity within the .bin's gate, docs/preprocessor-spec.md
 * section 5), else 0, and returns the index of the top label (the lowest on ties); -1 if an
 * argument is NULL.
 */
int foundry_model_predict(const foundry_model *model, const char *text, size_t len,
                          double *probabilities, int *confident);

/* Number of reflex rules in the .bin (0 for a format-3 file; docs/preprocessor-spec.md, rule B14). */
size_t foundry_model_num_rules(const foundry_model *model);

/* Name of reflex rule i as a NUL-terminated UTF-8 string owned by the model; NULL if out of range. */
const char *foundry_model_rule_name(const foundry_model *model, size_t i);

/*
 * The index of the first reflex rule that answers text[0..len) (tested on its normalised
 * text, before the model), -1 if none does (the model answers), -2 if an argument is NULL.
 */
int foundry_model_rule(const foundry_model *model, const char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* FOUNDRY_H */
