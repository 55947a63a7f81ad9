/*
 * add_func_patch1.c — the first upgrade for simple_server's add_func (build/lib/libadd_func_patch1.so).
 *
 * The original returns a + b, so simple_server prints add_func(1, 2)=3. This version returns
 * a * b + 100, so the same line shows 102: a result no mix-up of versions can produce by
 * accident, which lets the demo and the tests see at a glance which version ran.
 *
 *   hotpatch -p PID lib load p1 build/lib/libadd_func_patch1.so
 *   hotpatch -p PID func upgrade p1 add_func
 */
int add_func(int a, int b);

int add_func(int a, int b)
{
    return a * b + 100;
}
