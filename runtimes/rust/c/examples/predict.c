/*
 * predict.c — classify stdin lines with a Model Foundry micro-model through the C ABI.
 *
 *   make c
 *   cc runtimes/rust/c/examples/predict.c -Iruntimes/rust/c/include \
 *      -Lruntimes/rust/target/release -lfoundry -o predict
 *   printf '今天天气怎么样？\n' | LD_LIBRARY_PATH=runtimes/rust/target/release ./predict models is_question
 *
 * Prints, per line: label, TAB, confident (1/0), TAB, the text's unfamiliarity, TAB, the
 * probabilities in label order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "foundry.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODELS_DIR TASK < texts\n", argv[0]);
        return 2;
    }
    char error[512];
    foundry_model *model = foundry_model_load(argv[1], argv[2], error, sizeof error);
    if (model == NULL) {
        fprintf(stderr, "predict: %s\n", error);
        return 1;
    }
    size_t k = foundry_model_num_labels(model);
    double *probabilities = malloc(k * sizeof *probabilities);
    char *line = NULL;
    size_t capacity = 0;
    ssize_t n;
    while ((n = getline(&line, &capacity, stdin)) != -1) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        int confident = 0;
        int best = foundry_model_predict(model, line, (size_t)n, probabilities, &confident);
        if (best < 0) {
            fprintf(stderr, "predict: failed\n");
            return 1;
        }
        double unfamiliar = foundry_model_unfamiliar(model, line, (size_t)n);
        printf("%s\t%d\t%.17g", foundry_model_label(model, (size_t)best), confident, unfamiliar);
        for (size_t j = 0; j < k; j++) printf("\t%.17g", probabilities[j]);
        printf("\n");
    }
    free(line);
    free(probabilities);
    foundry_model_free(model);
    return 0;
}
