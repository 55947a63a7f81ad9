/* hotcold_helpers.c — what retry() (hotcold.c) calls: fails `fails_left` times first. */
int fails_left;
int retries;

int try_once(int x)
{
    if (fails_left > 0) {
        fails_left--;
        return -1;
    }
    return x;
}

void report_retry(int x)
{
    (void)x;
    retries++;
}
