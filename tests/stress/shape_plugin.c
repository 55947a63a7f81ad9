/*
 * shape_plugin.c — the plugin that shape_probe's `plugins` mode loads and unloads in a loop
 * while the engine flips plugin_fn. Built twice (cmake/patch.cmake): variant A returns
 * a + b + 1000, variant B (SHAPE_VARIANT_B) a + b + 2000, and the two lay their functions out
 * in opposite order, so that at the same load address plugin_fn of one lies inside
 * plugin_other of the other: bytes saved from one copy and written into the other would break
 * a function the engine was never asked to touch, and the probe checks both.
 */
int plugin_fn(int a, int b);
int plugin_other(int a);

/* The two functions, written once; each variant places them in its own order. */
#define DEFINE_PLUGIN_FN(bias_value)                                                          \
    int plugin_fn(int a, int b)                                                               \
    {                                                                                         \
        volatile int bias = (bias_value);                                                     \
        return a + b + bias;                                                                  \
    }
#define DEFINE_PLUGIN_OTHER                                                                   \
    int plugin_other(int a)                                                                   \
    {                                                                                         \
        volatile int k = 3;                                                                   \
        int x = a;                                                                            \
        for (int i = 0; i < 4; i++)                                                           \
            x += i * k;                                                                       \
        return a * k + x - a - 6 * k;                                                         \
    }

#ifdef SHAPE_VARIANT_B
DEFINE_PLUGIN_OTHER
DEFINE_PLUGIN_FN(2000)
#else
DEFINE_PLUGIN_FN(1000)
DEFINE_PLUGIN_OTHER
#endif
