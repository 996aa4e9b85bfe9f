/* The records of one Kafka record batch (message format v2), read in one C call.
 *
 * Why C: kafka-python reads each record in Python (DefaultRecordBatch._read_msg: seven
 * varints, two slices, the headers), 6-10 us a record here, on the daemon's main thread.
 * Here it is ~0.65 us (bench_e2e's records, one header each).
 * streamvae/kafka/fastrecords.py calls it from the batch's iteration; everything about
 * the batch (its CRC, compression, transactions, control batches) stays kafka-python's.
 *
 * read(buf, pos, count, base_offset, first_timestamp, max_timestamp, timestamp_type, cls)
 *   -> (records, pos, error): ``count`` records from buf[pos:], each a ``cls`` (a tuple
 *   subclass of 7 fields: size_in_bytes, offset, timestamp, timestamp_type, key, value,
 *   headers), the position after the last, and None. The bytes come off the network:
 *   every length is checked against the buffer. At a malformed record it stops: the
 *   records before it, the position where it starts, and what was wrong (a str; the
 *   same reasons as kafka-python's reader, whose caller raises CorruptRecordError after
 *   handing out the records before it).
 *
 * Record => Length Varint, Attributes Int8, TimestampDelta Varlong, OffsetDelta Varint,
 *           Key Bytes(Varint length, -1 null), Value Bytes, Headers [Key String, Value Bytes]
 * Varints are zigzag encoded, at most 5 bytes (int32) or 10 (int64).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    const unsigned char *p;
    Py_ssize_t pos, end;
} Reader;

/* A zigzag varint of at most max_bytes bytes; 0 and sets an error if it runs past the
 * end or is longer. */
static int read_varint(Reader *r, int max_bytes, int64_t *out) {
    uint64_t v = 0;
    for (int shift = 0, i = 0; i < max_bytes; i++, shift += 7) {
        if (r->pos >= r->end) {
            PyErr_SetString(PyExc_ValueError, "record truncated inside a varint");
            return 0;
        }
        unsigned char b = r->p[r->pos++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 1;
        }
    }
    PyErr_SetString(PyExc_ValueError, "varint longer than its type allows");
    return 0;
}

/* Nullable bytes of a varint length: Py_None for a negative length (-1 by the protocol;
 * Kafka's own reader and kafka-python take any), NULL and an error if it runs past the end. */
static PyObject *read_bytes(Reader *r, const char *what) {
    int64_t n;
    if (!read_varint(r, 5, &n)) return NULL;
    if (n < 0) Py_RETURN_NONE;
    if (n > r->end - r->pos) {
        PyErr_Format(PyExc_ValueError, "%s length %lld does not fit the record", what, (long long)n);
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->p + r->pos, (Py_ssize_t)n);
    r->pos += (Py_ssize_t)n;
    return b;
}

static PyObject *read_headers(Reader *r) {
    int64_t count;
    if (!read_varint(r, 5, &count)) return NULL;
    /* each header takes at least 2 bytes: a bound before allocating */
    if (count < 0 || count > (r->end - r->pos) / 2) {
        PyErr_Format(PyExc_ValueError, "invalid number of record headers %lld", (long long)count);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)count; i++) {
        int64_t n;
        if (!read_varint(r, 5, &n)) goto fail;
        if (n < 0 || n > r->end - r->pos) {
            PyErr_Format(PyExc_ValueError, "header key length %lld does not fit the record", (long long)n);
            goto fail;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)r->p + r->pos, (Py_ssize_t)n, "strict");
        if (key == NULL) goto fail;
        r->pos += (Py_ssize_t)n;
        PyObject *value = read_bytes(r, "header value");
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, key);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(list, i, pair);
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

/* One record, as a new ``cls`` instance. */
static PyObject *read_record(Reader *r, PyTypeObject *cls, long long base_offset, long long first_ts,
                             long long max_ts, int ts_type, PyObject *ts_type_obj) {
    int64_t length, ts_delta, offset_delta;
    if (!read_varint(r, 5, &length)) return NULL;
    if (length < 0 || length > r->end - r->pos) {
        PyErr_Format(PyExc_ValueError, "record length %lld does not fit the batch", (long long)length);
        return NULL;
    }
    Reader in = {r->p, r->pos, r->pos + (Py_ssize_t)length}; /* the record's own bytes */
    if (in.pos >= in.end) {
        PyErr_SetString(PyExc_ValueError, "record has no attributes");
        return NULL;
    }
    in.pos++; /* attributes: unused */
    if (!read_varint(&in, 10, &ts_delta) || !read_varint(&in, 5, &offset_delta)) return NULL;
    PyObject *fields[7] = {NULL};
    fields[0] = PyLong_FromLongLong((long long)length);
    fields[1] = PyLong_FromLongLong(base_offset + (long long)offset_delta);
    fields[2] = PyLong_FromLongLong(ts_type == 1 ? max_ts : first_ts + (long long)ts_delta);
    Py_INCREF(ts_type_obj);
    fields[3] = ts_type_obj;
    if (fields[0] == NULL || fields[1] == NULL || fields[2] == NULL) goto fail;
    if ((fields[4] = read_bytes(&in, "key")) == NULL) goto fail;
    if ((fields[5] = read_bytes(&in, "value")) == NULL) goto fail;
    if ((fields[6] = read_headers(&in)) == NULL) goto fail;
    if (in.pos != in.end) {
        PyErr_Format(PyExc_ValueError, "invalid record size: expected to read %lld bytes in record payload, but "
                     "instead read %lld", (long long)length, (long long)(in.pos - r->pos));
        goto fail;
    }
    PyObject *rec = cls->tp_alloc(cls, 7);
    if (rec == NULL) goto fail;
    for (int i = 0; i < 7; i++) PyTuple_SET_ITEM(rec, i, fields[i]);
    r->pos = in.end;
    return rec;
fail:
    for (int i = 0; i < 7; i++) Py_XDECREF(fields[i]);
    return NULL;
}

static PyObject *read_batch(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, count;
    long long base_offset, first_ts, max_ts;
    int ts_type;
    PyTypeObject *cls;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnLLLiO!", &buf, &pos, &count, &base_offset, &first_ts, &max_ts, &ts_type,
                          &PyType_Type, &cls))
        return NULL;
    PyObject *list = NULL, *ts_type_obj = NULL, *error = NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type) || cls->tp_itemsize != sizeof(PyObject *)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a tuple subclass");
        goto done;
    }
    if (pos < 0 || pos > buf.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "position or record count out of range");
        goto done;
    }
    /* a record takes at least 7 bytes: a bound before allocating */
    if (count > (buf.len - pos) / 7 + 1) {
        PyErr_Format(PyExc_ValueError, "%zd records cannot fit in %zd bytes", count, buf.len - pos);
        goto done;
    }
    ts_type_obj = PyLong_FromLong(ts_type);
    list = ts_type_obj == NULL ? NULL : PyList_New(count);
    if (list == NULL) goto done;
    Reader r = {(const unsigned char *)buf.buf, pos, buf.len};
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t at = r.pos;
        PyObject *rec = read_record(&r, cls, base_offset, first_ts, max_ts, ts_type, ts_type_obj);
        if (rec == NULL) {
            r.pos = at;
            if (PyErr_ExceptionMatches(PyExc_ValueError)) { /* malformed: the records before it, and why */
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                error = value == NULL ? PyUnicode_FromString("malformed record") : PyObject_Str(value);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                Py_SET_SIZE(list, i); /* items from i on are still NULL */
                if (error != NULL) break;
            }
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, rec);
    }
    pos = r.pos;
done:
    Py_XDECREF(ts_type_obj);
    PyBuffer_Release(&buf);
    if (list == NULL) return NULL;
    if (error == NULL) {
        Py_INCREF(Py_None);
        error = Py_None;
    }
    return Py_BuildValue("(NnN)", list, pos, error);
}

static PyMethodDef methods[] = {
    {"read", read_batch, METH_VARARGS, "read(buf, pos, count, base_offset, first_timestamp, max_timestamp, "
                                 "timestamp_type, cls) -> (records, pos, error): see streamvae/kafka/_records.c"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
