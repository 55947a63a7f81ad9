/*
 * add_func_patch2.c — a second upgrade for add_func (build/lib/libadd_func_patch2.so).
 *
 * Returns a * b + 200 (add_func(1, 2)=202), so stacking it on patch1 (102) and rolling back
 * shows the versions stack: 3 -> 102 -> 202 -> 102 -> 3. It also exports the same code under
 * a different name, add_func_v2, to show `func upgrade LIB FUNC SYMBOL`.
 */
int add_func(int a, int b);
int add_func_v2(int a, int b);

int add_func(int a, int b)
{
    return a * b + 200;
}

int add_func_v2(int a, int b)
{
    return a * b + 200;
}
