/* Graph checks: every value is defined exactly once, every use refers to a
 * defined value, and the nodes can be ordered so that definitions come
 * before uses. */
#include "reader_internal.h"

#include <stdlib.h>
#include <string.h>

/* Producer of a value that comes from outside the nodes: a graph input or
 * an initializer. */
#define PRODUCER_OUTSIDE SIZE_MAX
/* Producer marker for initializers while definitions are collected, so
 * that error messages can tell them from graph inputs. */
#define PRODUCER_INITIALIZER (SIZE_MAX - 1)

static const char *const SSA_HINT =
    "give every value a unique name; ONNX graphs are in static single-assignment form";

static const char *describe_producer(size_t producer) {
  if (producer == PRODUCER_INITIALIZER) {
    return "an initializer";
  }
  return "a graph input";
}

static bool report_redefinition(reader_context_t *context, const iq_onnx_node_t *nodes,
                                const char *where, const char *name, size_t existing) {
  if (existing < PRODUCER_INITIALIZER) {
    char *other = describe_node(&nodes[existing], existing);
    if (other == NULL) {
      return reader_out_of_memory(context, where);
    }
    iq_error_set(context->error, context->file, where, SSA_HINT,
                 "defines '%s', which %s also defines", name, other);
    free(other);
    return false;
  }
  return iq_error_set(context->error, context->file, where, SSA_HINT,
                      "defines '%s', which %s of the same name already defines", name,
                      describe_producer(existing));
}

/* Fills `table` with every defined value and its producer. */
static bool collect_definitions(reader_context_t *context, const iq_onnx_node_t *nodes,
                                size_t num_nodes, name_table_t *table) {
  const iq_onnx_model_t *model = context->model;
  size_t existing = 0;

  for (size_t i = 0; i < model->num_initializers; ++i) {
    const char *name = model->initializers[i].name;
    if (!name_table_insert(table, name, PRODUCER_INITIALIZER, &existing)) {
      char *where = format_string("initializer '%s'", name);
      bool result = where != NULL
                        ? report_redefinition(context, nodes, where, name, existing)
                        : reader_out_of_memory(context, NULL);
      free(where);
      return result;
    }
  }
  /* model->inputs excludes graph inputs that name initializers, which
   * ONNX allows as a way to give an input a default value. */
  for (size_t i = 0; i < model->num_inputs; ++i) {
    const char *name = model->inputs[i].name;
    if (!name_table_insert(table, name, PRODUCER_OUTSIDE, &existing)) {
      char *where = format_string("graph input '%s'", name);
      bool result = where != NULL
                        ? report_redefinition(context, nodes, where, name, existing)
                        : reader_out_of_memory(context, NULL);
      free(where);
      return result;
    }
  }
  for (size_t n = 0; n < num_nodes; ++n) {
    for (size_t o = 0; o < nodes[n].num_outputs; ++o) {
      const char *name = nodes[n].outputs[o];
      if (name[0] == '\0') {
        continue; /* an omitted optional output */
      }
      if (!name_table_insert(table, name, n, &existing)) {
        char *where = describe_node(&nodes[n], n);
        bool result = where != NULL
                          ? report_redefinition(context, nodes, where, name, existing)
                          : reader_out_of_memory(context, NULL);
        free(where);
        return result;
      }
    }
  }
  return true;
}

/* Checks that every node input and graph output is defined, and reports
 * whether the file's order already defines each value before its uses. */
static bool check_uses(reader_context_t *context, const iq_onnx_node_t *nodes, size_t num_nodes,
                       const name_table_t *table, bool *in_order) {
  *in_order = true;
  for (size_t n = 0; n < num_nodes; ++n) {
    for (size_t i = 0; i < nodes[n].num_inputs; ++i) {
      const char *name = nodes[n].inputs[i];
      if (name[0] == '\0') {
        continue; /* an omitted optional input */
      }
      size_t producer = 0;
      if (!name_table_find(table, name, &producer)) {
        char *where = describe_node(&nodes[n], n);
        if (where == NULL) {
          return reader_out_of_memory(context, NULL);
        }
        iq_error_set(context->error, context->file, where,
                     "check the name for typos, or add the missing initializer or graph input; "
                     "the model may be truncated or edited by hand",
                     "input %zu, '%s', is not defined: it is not a graph input, an initializer or "
                     "the output of any node",
                     i, name);
        free(where);
        return false;
      }
      if (producer < PRODUCER_INITIALIZER && producer >= n) {
        *in_order = false;
      }
    }
  }

  const iq_onnx_model_t *model = context->model;
  for (size_t i = 0; i < model->num_outputs; ++i) {
    const char *name = model->outputs[i].name;
    if (!name_table_find(table, name, NULL)) {
      char *where = format_string("graph output '%s'", name);
      if (where == NULL) {
        return reader_out_of_memory(context, NULL);
      }
      iq_error_set(context->error, context->file, where,
                   "check the output name for typos; every graph output must be produced by a "
                   "node, an initializer or a graph input",
                   "is not defined anywhere in the graph");
      free(where);
      return false;
    }
  }
  return true;
}

/* Returns the producer node of a node's input that is not yet placed in
 * the order, or SIZE_MAX when every input is available. */
static size_t pending_producer(const iq_onnx_node_t *node, const name_table_t *table,
                               const bool *placed, const char **value) {
  for (size_t i = 0; i < node->num_inputs; ++i) {
    size_t producer = 0;
    if (node->inputs[i][0] == '\0' || !name_table_find(table, node->inputs[i], &producer)) {
      continue;
    }
    if (producer < PRODUCER_INITIALIZER && !placed[producer]) {
      *value = node->inputs[i];
      return producer;
    }
  }
  return SIZE_MAX;
}

/* Reports a cycle among the nodes not yet placed, following unplaced
 * producers from `start` until a node repeats. */
static bool report_cycle(reader_context_t *context, const iq_onnx_node_t *nodes, size_t num_nodes,
                         const name_table_t *table, const bool *placed, size_t start) {
  size_t *visit_step = malloc(num_nodes * sizeof(*visit_step));
  size_t *path = malloc(num_nodes * sizeof(*path));
  if (visit_step == NULL || path == NULL) {
    free(visit_step);
    free(path);
    return reader_out_of_memory(context, NULL);
  }
  for (size_t i = 0; i < num_nodes; ++i) {
    visit_step[i] = SIZE_MAX;
  }

  /* Every unplaced node waits on an unplaced producer, so the walk stays
   * among unplaced nodes and must revisit one within num_nodes steps. */
  size_t steps = 0;
  size_t current = start;
  while (visit_step[current] == SIZE_MAX) {
    visit_step[current] = steps;
    path[steps++] = current;
    const char *value = NULL;
    size_t next = pending_producer(&nodes[current], table, placed, &value);
    if (next == SIZE_MAX) {
      break; /* unreachable: `current` would have been placed */
    }
    current = next;
  }

  size_t first = visit_step[current] == SIZE_MAX ? 0 : visit_step[current];
  char *where = describe_node(&nodes[current], current);
  /* The message lists the cycle as "A <- B <- A": each node uses a value
   * that the next one produces. Long cycles are cut after a few nodes. */
  char cycle[512] = "";
  size_t used = 0;
  for (size_t k = first; k <= steps && used < sizeof(cycle); ++k) {
    size_t index = k < steps ? path[k] : path[first];
    char *text = describe_node(&nodes[index], index);
    int written = snprintf(cycle + used, sizeof(cycle) - used, "%s%s", k == first ? "" : " <- ",
                           text != NULL ? text : "?");
    free(text);
    if (written < 0 || (size_t)written >= sizeof(cycle) - used) {
      /* Truncated: end with an ellipsis that fits. */
      strcpy(cycle + sizeof(cycle) - 5, "...");
      break;
    }
    used += (size_t)written;
  }

  if (where == NULL) {
    reader_out_of_memory(context, NULL);
  } else {
    iq_error_set(context->error, context->file, where,
                 "the graph must be acyclic; re-export the model or fix the node's inputs",
                 "is part of a cycle: %s (each node uses an output of the next)", cycle);
  }
  free(where);
  free(visit_step);
  free(path);
  return false;
}

/* A binary min-heap of node indices, so that Kahn's algorithm places ready
 * nodes in file order and the result is deterministic. */
typedef struct index_heap {
  size_t *items;
  size_t count;
} index_heap_t;

static void heap_push(index_heap_t *heap, size_t value) {
  size_t i = heap->count++;
  while (i > 0 && heap->items[(i - 1) / 2] > value) {
    heap->items[i] = heap->items[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  heap->items[i] = value;
}

static size_t heap_pop(index_heap_t *heap) {
  size_t top = heap->items[0];
  size_t last = heap->items[--heap->count];
  size_t i = 0;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= heap->count) {
      break;
    }
    if (child + 1 < heap->count && heap->items[child + 1] < heap->items[child]) {
      ++child;
    }
    if (heap->items[child] >= last) {
      break;
    }
    heap->items[i] = heap->items[child];
    i = child;
  }
  if (heap->count > 0) {
    heap->items[i] = last;
  }
  return top;
}

/* Kahn's algorithm over the node dependency edges. Writes the order into
 * `order`, or reports a cycle. */
static bool sort_nodes(reader_context_t *context, const iq_onnx_node_t *nodes, size_t num_nodes,
                       const name_table_t *table, size_t *order) {
  size_t num_edges = 0;
  for (size_t n = 0; n < num_nodes; ++n) {
    num_edges += nodes[n].num_inputs; /* bounded by the message size */
  }
  size_t *pending = calloc(num_nodes, sizeof(*pending));
  size_t *first_edge = calloc(num_nodes + 1, sizeof(*first_edge));
  size_t *consumers = malloc((num_edges == 0 ? 1 : num_edges) * sizeof(*consumers));
  bool *placed = calloc(num_nodes, sizeof(*placed));
  index_heap_t heap = {malloc(num_nodes * sizeof(size_t)), 0};
  bool ok = pending != NULL && first_edge != NULL && consumers != NULL && placed != NULL &&
            heap.items != NULL;
  if (!ok) {
    reader_out_of_memory(context, NULL);
    goto done;
  }

  /* Build the consumer lists in compressed form: first count the edges
   * leaving each producer, then fill them in. */
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t n = 0; n < num_nodes; ++n) {
      for (size_t i = 0; i < nodes[n].num_inputs; ++i) {
        size_t producer = 0;
        if (nodes[n].inputs[i][0] == '\0' || !name_table_find(table, nodes[n].inputs[i], &producer) ||
            producer >= PRODUCER_INITIALIZER) {
          continue;
        }
        if (pass == 0) {
          first_edge[producer + 1]++;
          pending[n]++;
        } else {
          consumers[first_edge[producer]++] = n;
        }
      }
    }
    if (pass == 0) {
      for (size_t n = 0; n < num_nodes; ++n) {
        first_edge[n + 1] += first_edge[n];
      }
    }
  }
  /* The fill pass advanced each first_edge[p] to the start of p + 1, so
   * the lists of p now run from first_edge[p - 1] (0 for p = 0). */

  for (size_t n = 0; n < num_nodes; ++n) {
    if (pending[n] == 0) {
      heap_push(&heap, n);
    }
  }
  size_t count = 0;
  while (heap.count > 0) {
    size_t n = heap_pop(&heap);
    placed[n] = true;
    order[count++] = n;
    size_t begin = n == 0 ? 0 : first_edge[n - 1];
    for (size_t e = begin; e < first_edge[n]; ++e) {
      if (--pending[consumers[e]] == 0) {
        heap_push(&heap, consumers[e]);
      }
    }
  }

  if (count < num_nodes) {
    size_t start = 0;
    while (placed[start]) {
      ++start;
    }
    ok = report_cycle(context, nodes, num_nodes, table, placed, start);
  }

done:
  free(pending);
  free(first_edge);
  free(consumers);
  free(placed);
  free(heap.items);
  return ok;
}

bool graph_check_and_sort(reader_context_t *context, iq_onnx_node_t *nodes, size_t num_nodes) {
  iq_onnx_model_t *model = context->model;
  size_t max_definitions = model->num_initializers + model->num_inputs;
  for (size_t n = 0; n < num_nodes; ++n) {
    max_definitions += nodes[n].num_outputs; /* bounded by the message size */
  }

  name_table_t table;
  if (!name_table_init(&table, max_definitions)) {
    return reader_out_of_memory(context, NULL);
  }
  bool in_order = true;
  bool ok = collect_definitions(context, nodes, num_nodes, &table) &&
            check_uses(context, nodes, num_nodes, &table, &in_order);
  if (!ok || in_order) {
    name_table_free(&table);
    model->nodes = nodes;
    model->num_nodes = num_nodes;
    return ok;
  }

  size_t *order = malloc(num_nodes * sizeof(*order));
  iq_onnx_node_t *sorted = arena_alloc_array(&context->state->arena, num_nodes, sizeof(*sorted));
  if (order == NULL || sorted == NULL) {
    free(order);
    name_table_free(&table);
    return reader_out_of_memory(context, NULL);
  }
  ok = sort_nodes(context, nodes, num_nodes, &table, order);
  if (ok) {
    for (size_t n = 0; n < num_nodes; ++n) {
      sorted[n] = nodes[order[n]];
    }
    model->nodes = sorted;
    model->num_nodes = num_nodes;
  }
  free(order);
  name_table_free(&table);
  return ok;
}
