/*
 * patch_test_unload.c — a shared library for test_patch whose function is a patch *target*:
 * the test unloads it (the program's own dlclose) while the function is patched and proves
 * the engine never writes its saved bytes into whatever is mapped there next.
 */
int unload_target(int a);

int unload_target(int a)
{
    volatile int k = 3;
    return a * k;
}
