/* Unit tests for util/base64.c: RFC 4648 §10 vectors in both alphabets, and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "util/base64.h"
#include "util/buf.h"

static void check(const char *enc, bool url, const char *want)
{
    uint8_t out[64];
    long n = wsb_base64_decode(enc, strlen(enc), url, out);
    assert_int_equal(n, (long)strlen(want));
    assert_memory_equal(out, want, (size_t)n);
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const padded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                         "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        check(padded[i], false, plain[i]);
        check(url[i], true, plain[i]);
    }
    /* the two alphabets differ in their last two digits */
    check("-_8", true, "\xfb\xff");
    check("+/8=", false, "\xfb\xff");
}

static void test_round_trip_with_encoder(void **state)
{
    (void)state;
    uint8_t bytes[256], out[400];
    for (int i = 0; i < 256; i++)
        bytes[i] = (uint8_t)i;
    for (size_t n = 0; n <= sizeof(bytes); n += 37) {
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_buf_base64(&b, bytes, n);
        long got = wsb_base64_decode((const char *)b.data, b.len, false, out);
        assert_int_equal(got, (long)n);
        assert_memory_equal(out, bytes, n);
        wsb_buf_cleanup(&b);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    uint8_t out[16];
    assert_int_equal(wsb_base64_decode("Zm9vY", 5, true, out), -1); /* one digit over */
    assert_int_equal(wsb_base64_decode("Zm+v", 4, true, out), -1);  /* §4 digit in url */
    assert_int_equal(wsb_base64_decode("Zm-v", 4, false, out), -1); /* url digit in §4 */
    assert_int_equal(wsb_base64_decode("Zg", 2, false, out), -1);   /* §4 needs padding */
    assert_int_equal(wsb_base64_decode("Zg=A", 4, false, out), -1); /* '=' inside */
    assert_int_equal(wsb_base64_decode("Z===", 4, false, out), -1); /* three '=' */
    assert_int_equal(wsb_base64_decode("Zg==", 4, true, out), -1);  /* url: no padding */
    assert_int_equal(wsb_base64_decode("Zm 9", 4, true, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_round_trip_with_encoder),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
