/**
 * fast-check sizes arrays "small" unless told otherwise: an arbitrary with
 * `maxLength: 150` and no `size` never generated more than 10 elements, so the
 * property tests here replayed short histories only. An explicit maximum now
 * means lengths spread up to it.
 */
import fc from 'fast-check';

fc.configureGlobal({ ...fc.readConfigureGlobal(), defaultSizeToMaxWhenMaxSpecified: true });
